//! A `spar:search` plugin that fails on chosen prompts, so the pipeline's "one failing tree
//! is recorded with its reason and the stage goes on" can be tested with real plugins:
//! a prompt containing `w3 ` traps (panic), `w4 ` returns an error, `w5 ` returns a tree
//! whose final node does not exist; any other prompt gets a one-step search (refine the
//! root once, judge the refinement).

wit_bindgen::generate!({
    world: "spar:search/search-strategy@0.1.0",
    path: ["../../../wit/types", "../../../wit/search"],
    generate_all,
});

use exports::spar::search::strategy::{Guest, Outcome, Task};
use spar::search::refiner;
use spar::types::types::{Error, Node, PluginInfo};

struct Flaky;

impl Guest for Flaky {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "flaky-search".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "fails on prompts with w3/w4/w5, else refines once".into(),
        }
    }

    fn search(task: Task) -> Result<Outcome, Error> {
        let p = &task.prompt;
        if p.contains("w3 ") {
            panic!("flaky-search: deliberate trap");
        }
        if p.contains("w4 ") {
            return Err(Error::Other("flaky-search: deliberate error".into()));
        }
        let root = Node {
            id: 0,
            parent: None,
            depth: 0,
            ..task.root
        };
        if p.contains("w5 ") {
            return Ok(Outcome {
                nodes: vec![root],
                final_node: 7,
                found: false,
            });
        }
        let mut nodes = vec![root.clone()];
        let mut found = false;
        if let Ok(r) = refiner::refine(&root) {
            let j = refiner::judge(&r.response)?;
            found = j.value >= task.params.end_gate;
            nodes.push(Node {
                id: 1,
                parent: Some(0),
                depth: 1,
                response: r.response,
                critique: j.critique,
                value: j.value,
                refine_output: r.output,
                visit_sequence: 1,
            });
        }
        let final_node = (nodes.len() - 1) as u32;
        Ok(Outcome {
            nodes,
            final_node,
            found,
        })
    }
}

export!(Flaky);
