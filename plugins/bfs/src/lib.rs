//! `spar:search` plugin: the reference breadth-first search of SPaR (the authors' default).

wit_bindgen::generate!({
    world: "spar:search/search-strategy@0.1.0",
    path: ["../../wit/types", "../../wit/search"],
    generate_all,
});

include!("../../search-core/src/plugin.rs");

struct Bfs;

impl exports::spar::search::strategy::Guest for Bfs {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "bfs".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "SPaR breadth-first tree search (reference semantics)".into(),
        }
    }

    fn search(task: Task) -> Result<Outcome, Error> {
        run(task, spar_search_core::bfs)
    }
}

export!(Bfs);
