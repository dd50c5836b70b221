//! The crate's layering, checked by reading `src/`: no cycle between top-level modules or
//! between the modules inside one of them, no engine importing the other, no wire codec
//! importing the crate or tokio, and no process-wide mutable static. Test code is not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path from the crate root, e.g. `["postgres", "relay", "state"]`.
type ModPath = Vec<String>;

/// Statics that may hold process-wide state: the allocator, and the spare buffers' per-thread
/// caches (`session::spare`: empty memory, as the allocator's own thread cache). None holds
/// any of sluice's state.
const ALLOWED_STATICS: [&str; 3] = ["ALLOC", "SPARE", "SPARE_VEC"];
/// Modules built only for tests and fuzzing (`cfg(any(test, fuzzing))`): the scripted seam
/// the relays are driven through, and the fuzz targets' entry points. Counted as test code.
const TEST_SUPPORT: [&str; 3] = ["scripted", "rig", "fuzz_entry"];

#[derive(Debug, Default)]
struct Graph {
    /// Top-level module → the top-level modules it uses.
    top: BTreeMap<String, BTreeSet<String>>,
    /// (top-level module, its child) → the siblings that child uses.
    inner: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file defines, and whether it is test code.
fn module_of(rel: &Path) -> (ModPath, bool) {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    let test = parts
        .iter()
        .any(|p| p == "tests" || TEST_SUPPORT.contains(&p.as_str()));
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    }
    (parts, test)
}

/// The code of a file without comments and without its trailing `mod tests { ... }`.
fn code(text: &str) -> String {
    let text = text
        .split("#[cfg(test)]\nmod tests {")
        .next()
        .unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    s.split_at(end)
}

/// The items of a `{...}` group at `s` (which starts after `{`), each as the text that follows.
fn group_items(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut items) = (0usize, 0usize, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&s[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items
}

/// Extends `base` by the path written at `s` (after a `::`), two segments deep at most,
/// expanding `{a, b::c}` groups.
fn expand(base: ModPath, s: &str, out: &mut Vec<ModPath>) {
    let s = s.trim_start();
    if base.len() >= 2 {
        out.push(base);
        return;
    }
    if let Some(group) = s.strip_prefix('{') {
        for item in group_items(group) {
            expand(base.clone(), item, out);
        }
        return;
    }
    let (name, rest) = ident(s);
    if name.is_empty() || name == "self" {
        out.push(base);
        return;
    }
    let mut path = base;
    path.push(name.to_owned());
    match rest.trim_start().strip_prefix("::") {
        Some(more) => expand(path, more, out),
        None => out.push(path),
    }
}

/// Every path into the crate that `code` (of module `module`) names, resolved from the root.
fn references(module: &ModPath, code: &str) -> Vec<ModPath> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for (i, _) in code.match_indices("::") {
        // Start of the path this `::` belongs to: the identifier chain before it.
        let mut start = i;
        while start > 0 {
            let c = bytes[start - 1] as char;
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                start -= 1;
            } else {
                break;
            }
        }
        if start + 2 > i || code[start..].starts_with("::") {
            continue;
        }
        let head = &code[start..i];
        let first = head.split("::").next().unwrap_or_default();
        if !matches!(first, "crate" | "super" | "self") || code[..start].ends_with('$') {
            continue;
        }
        // Only the `::` right after the first segment starts a path (later ones are inside it).
        if head.contains("::") && !head.split("::").all(|s| s == "super") {
            continue;
        }
        let mut base: ModPath = match first {
            "crate" => Vec::new(),
            _ => module.clone(),
        };
        let mut rest = &code[start..];
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        if rest.starts_with("super::") {
            continue;
        }
        let rest = rest
            .strip_prefix("crate::")
            .or_else(|| rest.strip_prefix("self::"))
            .unwrap_or(rest);
        if head.split("::").all(|s| s == "super") && head.contains("::") {
            // A `super::super::` chain: the `::` at `i` is inside it, counted at its start.
            continue;
        }
        expand(base, rest, &mut out);
    }
    out
}

fn graph(src: &Path) -> (Graph, Vec<String>) {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut g = Graph::default();
    let mut problems = Vec::new();
    for file in files {
        let rel = file.strip_prefix(src).unwrap_or(&file);
        let (module, test) = module_of(rel);
        let Ok(text) = std::fs::read_to_string(&file) else {
            problems.push(format!("{}: unreadable", rel.display()));
            continue;
        };
        if test || module.is_empty() {
            continue;
        }
        let code = code(&text);
        statics(rel, &code, &mut problems);
        let top = &module[0];
        let wire = module.get(1).is_some_and(|m| m == "wire");
        if wire && code.contains("tokio::") {
            problems.push(format!(
                "{}: a wire codec uses tokio (wire modules do no I/O)",
                rel.display()
            ));
        }
        for to in references(&module, &code) {
            let Some(target) = to.first() else { continue };
            if wire && !to.starts_with(&module[..2]) {
                problems.push(format!(
                    "{}: a wire codec imports {} (wire modules import nothing of the crate)",
                    rel.display(),
                    to.join("::")
                ));
            }
            if target != top {
                if matches!(
                    (top.as_str(), target.as_str()),
                    ("postgres", "mysql") | ("mysql", "postgres")
                ) {
                    problems.push(format!("{}: engine {top} imports {target}", rel.display()));
                }
                g.top.entry(top.clone()).or_default().insert(target.clone());
            } else if let (Some(child), Some(sibling)) = (module.get(1), to.get(1))
                && child != sibling
            {
                let inner = g.inner.entry(top.clone()).or_default();
                inner
                    .entry(child.clone())
                    .or_default()
                    .insert(sibling.clone());
            }
        }
    }
    (g, problems)
}

/// `static` items other than shared references: a static holding anything else may hold state
/// (atomics, locks, or a struct of them), which belongs in a handle passed down instead.
/// Immutable values are `const`.
fn statics(rel: &Path, code: &str, problems: &mut Vec<String>) {
    for line in code.lines() {
        let line = line.trim_start();
        let line = ["pub ", "pub(crate) ", "pub(super) "]
            .iter()
            .find_map(|p| line.strip_prefix(p))
            .unwrap_or(line);
        let Some(rest) = line.strip_prefix("static ") else {
            continue;
        };
        let (name, ty) = rest.split_once(':').unwrap_or((rest, ""));
        let name = name.trim().trim_start_matches("mut ");
        if !ty.trim_start().starts_with('&') && !ALLOWED_STATICS.contains(&name) {
            problems.push(format!(
                "{}: process-wide static {name}: make it a const or pass a handle",
                rel.display()
            ));
        }
    }
}

/// A cycle in `edges`, as the path around it, if there is one.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|s| s == n) {
            let mut found = stack[at..].to_vec();
            found.push(n.to_owned());
            return Some(found);
        }
        if done.contains(n) {
            return None;
        }
        stack.push(n.to_owned());
        for next in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(next, edges, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(n.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| visit(n, edges, &mut Vec::new(), &mut done))
}

/// Every layering problem in the crate at `src`.
fn problems(src: &Path) -> Vec<String> {
    let (g, mut problems) = graph(src);
    if let Some(c) = cycle(&g.top) {
        problems.push(format!(
            "top-level modules import each other: {}",
            c.join(" -> ")
        ));
    }
    for (top, inner) in &g.inner {
        if let Some(c) = cycle(inner) {
            problems.push(format!(
                "modules of {top} import each other: {}",
                c.join(" -> ")
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let path = dir.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn the_crate_has_no_layering_problem() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let (g, _) = graph(&src);
        assert!(
            g.top.len() > 10,
            "the walk found the modules: {:?}",
            g.top.keys()
        );
        assert!(
            g.top["app"].contains("postgres"),
            "edges are read: {:?}",
            g.top["app"]
        );
        let found = problems(&src);
        assert!(found.is_empty(), "layering problems:\n{}", found.join("\n"));
    }

    #[test]
    fn each_rule_finds_what_it_is_for() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        write(src, "lib.rs", "pub mod a;\n");
        write(src, "a.rs", "use crate::b::Thing;\n");
        write(
            src,
            "b/mod.rs",
            "// crate::a in a comment does not count\nfn f() { crate::{c, a::X}; }\n",
        );
        write(src, "b/tests.rs", "use crate::a;\n");
        write(
            src,
            "postgres/relay.rs",
            "use crate::mysql::wire;\nuse super::client::X;\n",
        );
        write(
            src,
            "postgres/client/login.rs",
            "use super::super::relay::Y;\n",
        );
        write(
            src,
            "postgres/wire/frame.rs",
            "use super::read::R;\nuse crate::pool::Lease;\nuse tokio::net::TcpStream;\n",
        );
        write(
            src,
            "session.rs",
            "pub static COUNTS: AtomicU64 = AtomicU64::new(0);\nstatic NAME: &str = \"x\";\n",
        );
        let found = problems(src);
        let has = |needle: &str| found.iter().any(|p| p.contains(needle));
        assert!(
            has("top-level modules import each other: a -> b -> a"),
            "{found:#?}"
        );
        assert!(has("engine postgres imports mysql"), "{found:#?}");
        assert!(
            has("modules of postgres import each other: client -> relay -> client"),
            "{found:#?}"
        );
        assert!(has("wire codec imports pool::Lease"), "{found:#?}");
        assert!(
            !has("read::R"),
            "a wire module may use its siblings: {found:#?}"
        );
        assert!(has("static COUNTS"), "{found:#?}");
        assert!(!has("NAME"), "{found:#?}");
        assert!(has("wire codec uses tokio"), "{found:#?}");
        assert_eq!(found.len(), 6, "{found:#?}");
    }
}
