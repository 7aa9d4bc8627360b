//! `spar:search` plugin: the reference depth-first search of SPaR.

wit_bindgen::generate!({
    world: "spar:search/search-strategy@0.1.0",
    path: ["../../wit/types", "../../wit/search"],
    generate_all,
});

include!("../../search-core/src/plugin.rs");

struct Dfs;

impl exports::spar::search::strategy::Guest for Dfs {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "dfs".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "SPaR depth-first tree search (reference semantics)".into(),
        }
    }

    fn search(task: Task) -> Result<Outcome, Error> {
        run(task, spar_search_core::dfs)
    }
}

export!(Dfs);
