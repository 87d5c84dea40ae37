//! The module arrows point one way (docs/architecture.md, "Layers"): each
//! layer of `src/` imports only from the layers below it, and no two modules
//! of one layer import each other.
//!
//! Read from the sources as text: every `crate::…`, `super::…` and `self::…`
//! path outside a file's `#[cfg(test)]` part is an import (doc links too —
//! a doc that links upwards points the reader the wrong way as well).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, lowest first.
const LAYERS: [&str; 7] = [
    "sync",
    "events",
    "connection",
    "exporter",
    "http",
    "config",
    "daemon",
];

/// Every module of the library (`a::b`) and the text of its file, without
/// its tests.
fn modules() -> BTreeMap<String, String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    collect(&src, &mut files);
    files
        .into_iter()
        .filter(|path| !path.ends_with("main.rs") && !path.ends_with("lib.rs"))
        .map(|path| {
            let relative = path.strip_prefix(&src).unwrap().with_extension("");
            let mut parts: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|last| last == "mod") {
                parts.pop();
            }
            let text = fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap().to_owned();
            (parts.join("::"), code)
        })
        .collect()
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The module a path written in `module` names, if it is one of ours.
fn resolve(module: &str, path: &str, modules: &BTreeMap<String, String>) -> Option<String> {
    let mut segments: Vec<&str> = path.split("::").collect();
    let mut base: Vec<&str> = module.split("::").collect();
    match segments[0] {
        "crate" => base.clear(),
        "self" => {}
        "super" => {
            while segments.first() == Some(&"super") {
                base.pop();
                segments.remove(0);
            }
            segments.insert(0, "self");
        }
        _ => return None,
    }
    segments.remove(0);
    let full: Vec<&str> = base.into_iter().chain(segments).collect();
    (1..=full.len())
        .rev()
        .map(|n| full[..n].join("::"))
        .find(|candidate| modules.contains_key(candidate))
}

/// `(from, to)` for every path in one module that names another.
fn imports(modules: &BTreeMap<String, String>) -> BTreeSet<(String, String)> {
    let mut edges = BTreeSet::new();
    for (module, code) in modules {
        let bytes = code.as_bytes();
        for start in ["crate::", "super::", "self::"]
            .iter()
            .flat_map(|prefix| code.match_indices(prefix).map(|(at, _)| at))
        {
            let preceded_by_word = start > 0
                && (bytes[start - 1].is_ascii_alphanumeric()
                    || bytes[start - 1] == b'_'
                    || bytes[start - 1] == b':');
            if preceded_by_word {
                continue;
            }
            let path: String = code[start..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let path = path.trim_end_matches(':');
            if let Some(target) = resolve(module, path, modules)
                && target != *module
                && !module.starts_with(&format!("{target}::"))
                && !target.starts_with(&format!("{module}::"))
            {
                edges.insert((module.clone(), target));
            }
        }
    }
    edges
}

fn layer_of(module: &str) -> usize {
    let top = module.split("::").next().unwrap();
    LAYERS
        .iter()
        .position(|layer| *layer == top)
        .unwrap_or_else(|| panic!("module {module} is in no layer: add it to LAYERS"))
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let modules = modules();
    let upward: Vec<String> = imports(&modules)
        .into_iter()
        .filter(|(from, to)| layer_of(to) > layer_of(from))
        .map(|(from, to)| format!("{from} -> {to}"))
        .collect();
    assert!(upward.is_empty(), "imports pointing up: {upward:#?}");
}

#[test]
fn no_two_modules_of_one_parent_import_each_other() {
    let modules = modules();
    // An import between two modules, seen from their nearest common parent:
    // `a::b::c -> a::d` is the sibling arrow `a::b -> a::d`.
    let siblings: BTreeSet<(String, String)> = imports(&modules)
        .into_iter()
        .filter_map(|(from, to)| {
            let from: Vec<&str> = from.split("::").collect();
            let to: Vec<&str> = to.split("::").collect();
            let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
            (common < from.len() && common < to.len())
                .then(|| (from[..=common].join("::"), to[..=common].join("::")))
        })
        .collect();
    let cycles: Vec<String> = siblings
        .iter()
        .filter(|(a, b)| a < b && siblings.contains(&(b.clone(), a.clone())))
        .map(|(a, b)| format!("{a} <-> {b}"))
        .collect();
    assert!(
        cycles.is_empty(),
        "modules that import each other: {cycles:#?}"
    );
}

#[test]
fn the_checker_sees_imports_at_all() {
    // Guards the two tests above against passing because nothing was read.
    let modules = modules();
    assert!(
        modules.contains_key("http::web::tls"),
        "{:?}",
        modules.keys()
    );
    let edges = imports(&modules);
    assert!(edges.contains(&("daemon".to_owned(), "config".to_owned())));
    assert!(edges.contains(&("exporter::consume".to_owned(), "events".to_owned())));
}
