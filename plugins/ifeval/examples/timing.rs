//! Time `evaluate` per instruction type over a responses file (IFEval rows + `response`):
//! where the checker spends its time.
use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::Instant;

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("usage: timing RESPONSES.jsonl");
    let f = std::io::BufReader::new(std::fs::File::open(path).unwrap());
    let t = Instant::now();
    std::sync::LazyLock::force(&ifeval::langdetect::PROFILES);
    println!(
        "langdetect tables: {:.2} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    let t = Instant::now();
    ifeval::treebank::word_tokenize("A B.");
    println!("treebank rules: {:.2} ms", t.elapsed().as_secs_f64() * 1e3);
    let text = "Write a 300+ word summary of the wikipedia page about the history of the county. Do not use any commas and highlight at least 3 sections that has titles in markdown format.";
    let t = Instant::now();
    for _ in 0..1000 {
        std::hint::black_box(ifeval::langdetect::detect(text));
    }
    println!("detect: {:.1} us", t.elapsed().as_secs_f64() * 1e3);
    let t = Instant::now();
    for _ in 0..1000 {
        std::hint::black_box(ifeval::treebank::word_tokenize(text));
    }
    println!("word_tokenize: {:.1} us", t.elapsed().as_secs_f64() * 1e3);
    let mut per: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    let t0 = Instant::now();
    for line in f.lines() {
        let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        let prompt = v["prompt"].as_str().unwrap();
        let resp = v["response"].as_str().unwrap();
        for (id, kw) in v["instruction_id_list"]
            .as_array()
            .unwrap()
            .iter()
            .zip(v["kwargs"].as_array().unwrap())
        {
            let id = id.as_str().unwrap();
            let kw: serde_json::Map<String, serde_json::Value> = kw
                .as_object()
                .unwrap()
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let t = Instant::now();
            if let Ok(ins) = ifeval::checks::Instruction::build(id, &kw, prompt) {
                std::hint::black_box(ins.evaluate(resp));
            }
            let e = per.entry(id.to_string()).or_default();
            e.0 += 1;
            e.1 += t.elapsed().as_secs_f64();
        }
    }
    let mut v: Vec<_> = per.into_iter().collect();
    v.sort_by(|a, b| b.1.1.partial_cmp(&a.1.1).unwrap());
    for (id, (n, s)) in v {
        println!("{:>9.2} ms  {:>4}  {}", s * 1e3, n, id);
    }
    println!("total {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
}
