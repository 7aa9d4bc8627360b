//! A tree search driven by a real model through the real plugins: the generation engine on a
//! tiny random model, the spar-prompts plugin for the conversations, the BFS plugin.

use crate::common;

use spar_host::model::LoadedModel;
use spar_host::model::generate::{Engine, SamplingParams};
use spar_host::model::tiny::write_tiny_model;
use spar_host::plugin::prompts::Prompts;
use spar_host::plugin::search::{Node, SearchParams, SearchStrategy};
use spar_host::selfplay::judge::{ModelSearchHost, VoteConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trees_search_concurrently_over_the_engine() {
    let dir = common::tempdir("selfplay-model");
    write_tiny_model(&dir, 64, 9).unwrap();
    let lm = LoadedModel::load(&dir, tch::Device::Cpu, tch::Kind::Float).unwrap();
    let engine = Engine::start(lm, 64).unwrap();
    let host = common::host();
    let bfs = SearchStrategy::load(&host, &common::shipped("bfs"))
        .await
        .unwrap();
    let prompts_plugin = host.load(&common::shipped("spar_prompts")).unwrap();
    let mut tasks = Vec::new();
    for i in 0..3 {
        let (engine, bfs, plugin) = (engine.clone(), bfs.clone(), prompts_plugin.clone());
        tasks.push(tokio::spawn(async move {
            let prompts = Prompts::from_plugin(plugin).await.unwrap();
            let vote = VoteConfig {
                k: 3,
                max_new_tokens: 6,
                ..VoteConfig::default()
            };
            let refine = SamplingParams {
                temperature: 0.9,
                max_new_tokens: 6,
                ..SamplingParams::default()
            };
            let h = ModelSearchHost::new(engine, prompts, "Write w5 w6.", vote, refine, 5, i);
            let root = Node {
                id: 0,
                parent: None,
                depth: 0,
                response: "w7 w8".into(),
                critique: "crit".into(),
                value: 0.0,
                refine_output: String::new(),
                visit_sequence: 0,
            };
            bfs.search("Write w5 w6.", &root, &SearchParams::default(), Box::new(h))
                .await
        }));
    }
    for t in tasks {
        let (out, h) = t.await.unwrap();
        let out = out.unwrap();
        // A random model never writes the refinement markers: every refine attempt fails,
        // the tree is the root alone, and no budget is spent.
        assert_eq!(out.nodes.len(), 1);
        assert!(!out.found);
        let h = h.unwrap().into_any().downcast::<ModelSearchHost>().unwrap();
        assert_eq!(h.budget, 5);
    }
}

/// `value = "checkers"`: the checker plugins value a response — 1 when every constraint
/// passes, else half the share passed — and the critique names what failed, in the judge's
/// answer format (so the prompts plugin parses it as the verdict it states).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkers_value_responses() {
    use spar_host::plugin::checker::{Checker, CheckerSet};
    use spar_host::plugin::prompts::Verdict;
    use spar_host::selfplay::judge::Constraints;
    let host = common::host();
    let checks = Checker::load(&host, &common::shipped("spar_checks"))
        .await
        .unwrap();
    let set = CheckerSet::new(vec![checks]).await.unwrap();
    let mut c = Constraints {
        set,
        list: vec![
            (
                "spar:ends_with_punctuation".into(),
                r#"{"punctuation": "!"}"#.into(),
            ),
            (
                "spar:question_count".into(),
                r#"{"count": 1, "relation": "at least"}"#.into(),
            ),
        ],
    };
    let p = "Ask one question and end with !";
    let both = c.judge(p, "Is it sunny? Yes it is!").await.unwrap();
    assert_eq!((both.value, both.yes, both.no), (1.0, 2, 0));
    let one = c.judge(p, "Is it sunny? Yes it is.").await.unwrap();
    assert_eq!((one.value, one.yes, one.no), (0.25, 1, 1));
    assert!(one.critique.contains("spar:ends_with_punctuation"));
    assert!(!one.critique.contains("spar:question_count"));
    let none = c.judge(p, "It is sunny.").await.unwrap();
    assert_eq!((none.value, none.yes, none.no), (0.0, 0, 2));
    let mut prompts = Prompts::load(&host, &common::shipped("spar_prompts"))
        .await
        .unwrap();
    assert_eq!(
        prompts.parse_verdict(&both.critique).await.unwrap(),
        Verdict::Yes
    );
    assert_eq!(
        prompts.parse_verdict(&one.critique).await.unwrap(),
        Verdict::No
    );
}
