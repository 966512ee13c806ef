//! Throughput of the value codecs and the typed binding on a resource-sized value.
//!
//! Run with `cargo bench -p tfplugin --bench codec`. Plain `std::time` timing (no
//! criterion) keeps the dev-dependency set small; each figure is the median of several
//! rounds.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tfplugin::{Attr, Type, Value, from_value, json, msgpack, to_value};

#[derive(Serialize, Deserialize)]
struct Rule {
    cidr: String,
    port: u16,
    protocol: String,
    description: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Model {
    id: Attr<String>,
    name: String,
    size: i64,
    ratio: f64,
    enabled: bool,
    tags: BTreeMap<String, String>,
    zones: Vec<String>,
    rule: Vec<Rule>,
}

fn model_type() -> Type {
    let rule = Type::object([
        ("cidr", Type::String),
        ("port", Type::Number),
        ("protocol", Type::String),
        ("description", Type::String),
    ]);
    Type::object([
        ("id", Type::String),
        ("name", Type::String),
        ("size", Type::Number),
        ("ratio", Type::Number),
        ("enabled", Type::Bool),
        ("tags", Type::map(Type::String)),
        ("zones", Type::set(Type::String)),
        ("rule", Type::list(rule)),
    ])
}

fn model() -> Model {
    Model {
        id: Attr::Known("cluster-0123456789abcdef".into()),
        name: "production-cluster".into(),
        size: 12,
        ratio: 0.75,
        enabled: true,
        tags: (0..20)
            .map(|i| (format!("tag-{i}"), format!("value-{i}")))
            .collect(),
        zones: (0..3).map(|i| format!("zone-{i}")).collect(),
        rule: (0..50)
            .map(|i| Rule {
                cidr: format!("10.{i}.0.0/16"),
                port: 1000 + i,
                protocol: "tcp".into(),
                description: (i % 2 == 0).then(|| format!("rule number {i}")),
            })
            .collect(),
    }
}

/// Median time per operation over `rounds` rounds of `iters` iterations.
fn measure(name: &str, bytes: usize, iters: u32, mut f: impl FnMut()) {
    let mut per_op: Vec<Duration> = (0..7)
        .map(|_| {
            let t0 = Instant::now();
            for _ in 0..iters {
                f();
            }
            t0.elapsed() / iters
        })
        .collect();
    per_op.sort();
    let median = per_op[per_op.len() / 2];
    let mbps = if bytes > 0 {
        format!("  {:8.1} MB/s", bytes as f64 / median.as_secs_f64() / 1e6)
    } else {
        String::new()
    };
    println!(
        "{name:<28} {:>10.1} µs/op{mbps}",
        median.as_secs_f64() * 1e6
    );
}

fn main() {
    let ty = model_type();
    let m = model();
    let value = to_value(&m, &ty).expect("model fits its type");
    let mp = msgpack::encode(&value, &ty).expect("encodes");
    let js = json::encode(&value, &ty).expect("encodes");
    println!("value: {} bytes msgpack, {} bytes JSON", mp.len(), js.len());
    let iters = 200;
    measure("msgpack::encode", mp.len(), iters, || {
        black_box(msgpack::encode(black_box(&value), &ty).expect("encodes"));
    });
    measure("msgpack::decode", mp.len(), iters, || {
        black_box(msgpack::decode(black_box(&mp), &ty).expect("decodes"));
    });
    measure("json::encode", js.len(), iters, || {
        black_box(json::encode(black_box(&value), &ty).expect("encodes"));
    });
    measure("json::decode", js.len(), iters, || {
        black_box(json::decode(black_box(&js), &ty).expect("decodes"));
    });
    measure("to_value (serde)", 0, iters, || {
        black_box(to_value(black_box(&m), &ty).expect("fits"));
    });
    measure("from_value (serde)", 0, iters, || {
        black_box(from_value::<Model>(black_box(&value)).expect("fits"));
    });
    let v2: Value = msgpack::decode(&mp, &ty).expect("decodes");
    measure("Value == (structural)", 0, iters, || {
        black_box(black_box(&v2) == black_box(&value));
    });
}
