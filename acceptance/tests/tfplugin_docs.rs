//! The generic docs generator (`tfplugin::docs`) on the example provider, against the golden
//! pages in provider/tfplugin/examples/tfexample/docs.

use std::process::Command;

const GOLDEN: &str = "provider/tfplugin/examples/tfexample/docs";

fn docs_bin() -> std::path::PathBuf {
    acceptance::build_example("tfplugin", "tfexample-docs").expect("building the docs generator")
}

#[test]
fn golden_docs_are_up_to_date() {
    let golden = acceptance::workspace_root().join(GOLDEN);
    let out = Command::new(docs_bin())
        .arg("--check")
        .arg(&golden)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the example provider's docs are stale; regenerate with\n  cargo run -p tfplugin --example tfexample-docs -- --write {GOLDEN}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_lists_stale_pages_and_write_repairs_them() {
    let golden = acceptance::workspace_root().join(GOLDEN);
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    // Copy the golden tree, then damage it in every way the check must notice.
    for entry in walk(&golden) {
        let rel = entry.strip_prefix(&golden).unwrap();
        let dst = docs.join(rel);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &dst).unwrap();
    }
    std::fs::write(docs.join("resources/file.md"), "outdated").unwrap();
    std::fs::remove_file(docs.join("functions/sha256.md")).unwrap();
    std::fs::write(docs.join("data-sources/removed.md"), "gone").unwrap();
    std::fs::create_dir_all(docs.join("guides")).unwrap();
    std::fs::write(docs.join("guides/mine.md"), "hand-written").unwrap();

    let out = Command::new(docs_bin())
        .arg("--check")
        .arg(&docs)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "resources/file.md (outdated)",
        "functions/sha256.md (missing)",
        "data-sources/removed.md (no longer generated)",
    ] {
        assert!(
            stderr.contains(expected),
            "{expected} not reported:\n{stderr}"
        );
    }
    assert!(!stderr.contains("guides"), "{stderr}");

    let out = Command::new(docs_bin())
        .arg("--write")
        .arg(&docs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(docs_bin())
        .arg("--check")
        .arg(&docs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!docs.join("data-sources/removed.md").exists());
    assert_eq!(
        std::fs::read_to_string(docs.join("guides/mine.md")).unwrap(),
        "hand-written"
    );
    assert_eq!(
        std::fs::read_to_string(docs.join("resources/file.md")).unwrap(),
        std::fs::read_to_string(golden.join("resources/file.md")).unwrap()
    );
}

#[test]
fn bad_usage_exits_2() {
    let out = Command::new(docs_bin())
        .arg("--frobnicate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("reading the golden docs") {
        let p = e.expect("reading the golden docs").path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
