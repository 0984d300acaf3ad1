//! The house rules of the source tree (docs/ARCHITECTURE.md), checked on every run: each
//! source file of `src/` and `emulator/src/` says what it owns in its first lines (`//!`) and
//! stays under the size of one concern (1,000 lines), and no two top-level modules of a crate
//! import each other, directly or around a longer circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 1_000;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn crate_sources(crate_src: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(crate_src);
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    assert!(files.len() > 5, "no sources under {}", root.display());
    files
}

/// The top-level module a file belongs to: `src/fs/read.rs` -> `fs`, `src/lib.rs` -> `lib`.
fn top_module(crate_src: &str, file: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join(crate_src);
    let rel = file.strip_prefix(&root).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// The source without `#[cfg(test)] mod … { … }` blocks and without comment lines (doc links
/// name modules without importing them).
fn code_of(source: &str) -> String {
    let mut text = source.to_string();
    while let Some(start) = text.find("#[cfg(test)]") {
        let rest = &text[start..];
        let Some(open) = rest.find('{') else { break };
        let head = &rest[..open];
        if !head.contains("mod ") {
            // A test-only item that is not a module: drop the attribute only.
            text.replace_range(start..start + "#[cfg(test)]".len(), "");
            continue;
        }
        let mut depth = 0usize;
        let mut end = rest.len();
        for (i, c) in rest[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        text.replace_range(start..start + end, "");
    }
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segment of every `crate::a::…` path and of every item of `crate::{a, b::c}`.
fn imported_modules(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1usize;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 || (c == ',' && depth == 1) {
                    let first: String = item
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    out.insert(first);
                    item.clear();
                    if depth == 0 {
                        break;
                    }
                } else {
                    item.push(c);
                }
            }
        } else {
            let first: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(first);
        }
    }
    // Only modules (lower case); `crate::SharedState` names an item of the crate root.
    out.retain(|m| m.chars().next().is_some_and(|c| c.is_ascii_lowercase()));
    out
}

/// The circles of the graph (strongly connected components of more than one module).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    let reach = |from: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(m) = todo.pop() {
            for next in graph.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let mut found: Vec<BTreeSet<String>> = Vec::new();
    for module in graph.keys() {
        let from = reach(module);
        if !from.contains(module) || found.iter().any(|c| c.contains(module)) {
            continue;
        }
        let circle: BTreeSet<String> = from
            .into_iter()
            .filter(|other| reach(other).contains(module))
            .collect();
        found.push(circle);
    }
    found
}

fn import_graph(crate_src: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in crate_sources(crate_src) {
        let me = top_module(crate_src, &file);
        let code = code_of(&std::fs::read_to_string(&file).unwrap());
        let entry = graph.entry(me.clone()).or_default();
        for module in imported_modules(&code) {
            if module != me && module != "self" {
                entry.insert(module);
            }
        }
    }
    graph
}

#[test]
fn no_two_modules_import_each_other() {
    for crate_src in ["src", "emulator/src"] {
        let graph = import_graph(crate_src);
        assert!(graph.len() > 5, "{crate_src}: {graph:?}");
        let found = circles(&graph);
        assert!(
            found.is_empty(),
            "{crate_src}: modules that import each other (directly or around a circle): \
             {found:?}\nthe graph: {graph:#?}"
        );
    }
}

#[test]
fn every_source_file_says_what_it_owns_and_holds_one_concern() {
    let mut problems = Vec::new();
    for crate_src in ["src", "emulator/src"] {
        for file in crate_sources(crate_src) {
            let text = std::fs::read_to_string(&file).unwrap();
            let name = file.display();
            let lines = text.lines().count();
            if lines > MAX_LINES {
                problems.push(format!(
                    "{name}: {lines} lines (over {MAX_LINES}: split it)"
                ));
            }
            if !text.starts_with("//!") {
                problems.push(format!("{name}: does not open with a //! essay"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checks_see_circles_and_imports() {
    // The checker itself: a circle of three, grouped imports, test modules and comments.
    let code = code_of(
        "use crate::{api::x, fs::{a, b}};\n// crate::cli in a comment\n\
         fn f() { crate::hash::h(); }\n#[cfg(test)]\nmod tests { use crate::mount::m; }\n",
    );
    let found = imported_modules(&code);
    assert_eq!(
        found.into_iter().collect::<Vec<_>>(),
        ["api", "fs", "hash"],
        "{code}"
    );
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    graph.entry("c".into()).or_default().insert("a".into());
    graph.entry("d".into()).or_default().insert("a".into());
    let found = circles(&graph);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].iter().collect::<Vec<_>>(), ["a", "b", "c"]);
}
