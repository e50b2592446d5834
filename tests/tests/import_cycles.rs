//! No import circles between the files of a crate: each `use crate::…` / `use super::…`
//! (and each inline `crate::…` / `super::…` path) is an edge from the file that names it to
//! the file that defines the item, and the graph must have no cycle.
//!
//! A name a facade re-exports (`pub use child::Item` in `lib.rs` or a `mod.rs`) is followed
//! to the file that defines it, and the re-export itself is not an edge: a facade that
//! names its children's items is not a circle, a child that imports what its parent
//! defines while the parent imports the child is. Items under `#[cfg(test)]` (the
//! `mod tests` blocks) are left out: tests may import freely. `main.rs` and `src/bin/` are
//! other crates (they import the library by its name) and are not scanned.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The `src` folders checked, relative to the workspace root.
const CRATE_SRC_DIRS: &[&str] = &[
    "guest/src",
    "attestation/src",
    "attestation/dev/src",
    "attestation/client/src",
];

#[test]
fn no_import_circles_between_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut report = Vec::new();
    for dir in CRATE_SRC_DIRS {
        let files = read_sources(&root.join(dir));
        assert!(!files.is_empty(), "no .rs files under {dir}");
        for cycle in find_cycles(&files) {
            report.push(format!("{dir}: {cycle}"));
        }
    }
    assert!(report.is_empty(), "import circles:\n{}", report.join("\n"));
}

#[test]
fn the_checker_finds_a_circle_and_follows_re_exports() {
    let files = |list: &[(&str, &str)]| -> BTreeMap<String, String> {
        list.iter()
            .map(|(p, s)| (p.to_string(), s.to_string()))
            .collect()
    };
    let circle = files(&[
        ("lib.rs", "pub mod a; pub mod b;"),
        ("a.rs", "use crate::b::B;\npub struct A;"),
        (
            "b.rs",
            "pub struct B(crate::a::A);\n#[cfg(test)]\nmod tests { use crate::a; }",
        ),
    ]);
    let found = find_cycles(&circle);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("a.rs -> b.rs -> a.rs"), "{found:?}");
    // A facade re-exporting a child, the child importing the facade's own item: no circle.
    let facade = files(&[
        ("lib.rs", "pub mod t;"),
        ("t/mod.rs", "mod p;\npub use p::select;\npub trait Provider {}"),
        ("t/p.rs", "use super::Provider;\npub fn select() {}"),
        (
            "user.rs",
            "use crate::t::{select, Provider};\n// use crate::user;\nfn f() { let _ = \"crate::user::x\"; }",
        ),
    ]);
    assert!(
        find_cycles(&facade).is_empty(),
        "{:?}",
        find_cycles(&facade)
    );
    // Imports only a test makes are no circle.
    let tests_only = files(&[
        ("lib.rs", "pub mod a; pub mod b;"),
        ("a.rs", "use crate::b::B;\npub struct A;"),
        (
            "b.rs",
            "pub struct B;\n#[cfg(all(test, feature = \"x\"))]\nmod tests { use crate::a::A; fn f() { let _ = '{'; } }",
        ),
    ]);
    assert!(find_cycles(&tests_only).is_empty());
}

/// Every `.rs` file under `dir` (relative path with `/` → contents), less the other crates.
fn read_sources(dir: &Path) -> BTreeMap<String, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let rel = path
                .strip_prefix(base)
                .expect("under base")
                .to_string_lossy()
                .replace('\\', "/");
            if path.is_dir() {
                if rel != "bin" {
                    walk(base, &path, out);
                }
            } else if rel.ends_with(".rs") && rel != "main.rs" {
                let text = std::fs::read_to_string(&path).expect("source file");
                out.insert(rel, text);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// The module path of a file: `lib.rs` → [], `tee/mod.rs` → [tee], `tee/probe.rs` →
/// [tee, probe].
fn module_of(file: &str) -> Vec<String> {
    let stem = file.trim_end_matches(".rs");
    let mut parts: Vec<String> = stem.split('/').map(str::to_string).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The source with comments, string and character literals blanked (newlines kept, so
/// line numbers still hold).
fn strip_literals(src: &str) -> String {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let keep_newlines = |out: &mut String, from: &[char]| {
        out.extend(from.iter().filter(|&&ch| ch == '\n'));
    };
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        let prev_ident = i > 0 && ident(c[i - 1]);
        if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let (start, mut depth) = (i, 0usize);
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            keep_newlines(&mut out, &c[start..i.min(c.len())]);
        } else if !prev_ident && (c[i] == 'r' || (c[i] == 'b' && c.get(i + 1) == Some(&'r'))) && {
            let mut j = i + if c[i] == 'b' { 2 } else { 1 };
            while c.get(j) == Some(&'#') {
                j += 1;
            }
            c.get(j) == Some(&'"')
        } {
            let start = i;
            i += if c[i] == 'b' { 2 } else { 1 };
            let mut hashes = 0;
            while c[i] == '#' {
                hashes += 1;
                i += 1;
            }
            i += 1;
            while i < c.len() {
                if c[i] == '"' && (0..hashes).all(|h| c.get(i + 1 + h) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                i += 1;
            }
            out.push_str("\"\"");
            keep_newlines(&mut out, &c[start..i.min(c.len())]);
        } else if c[i] == '"' {
            let start = i;
            i += 1;
            while i < c.len() && c[i] != '"' {
                i += if c[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
            keep_newlines(&mut out, &c[start..i.min(c.len())]);
        } else if c[i] == '\'' && c.get(i + 1) == Some(&'\\') {
            // An escaped character literal: '\n', '\'', '\u{..}'.
            i += 2;
            while i < c.len() && c[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if c[i] == '\'' && c.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push_str("' '");
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Where the item that starts at byte `from` ends: after its `;`, or after the `}` that
/// closes its first `{`.
fn item_end(text: &str, from: usize) -> usize {
    let mut depth = 0usize;
    for (k, ch) in text[from..].char_indices() {
        match ch {
            ';' if depth == 0 => return from + k + 1,
            '{' => depth += 1,
            '}' => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return from + k + 1;
                }
            }
            _ => {}
        }
    }
    text.len()
}

/// Whether a `cfg` predicate holds only in tests: `test`, or `all(…)` with `test` in it.
fn test_only(predicate: &str) -> bool {
    let predicate: String = predicate.split_whitespace().collect();
    predicate == "test"
        || predicate
            .strip_prefix("all(")
            .and_then(|p| p.strip_suffix(')'))
            .is_some_and(|args| args.split(',').any(|a| a == "test"))
}

/// The text with every test-only item (`#[cfg(test)]`, `#[cfg(all(test, …))]`) blanked
/// (newlines kept).
fn strip_test_items(text: &str) -> String {
    let mut out = text.to_string();
    let mut search = 0;
    while let Some(at) = out[search..].find("#[cfg(") {
        let start = search + at;
        let Some(close) = out[start..].find(")]") else {
            break;
        };
        let predicate = &out[start + "#[cfg(".len()..start + close];
        if !test_only(predicate) {
            search = start + close;
            continue;
        }
        let end = item_end(&out, start + close + 2);
        let blank: String = out[start..end]
            .chars()
            .map(|ch| if ch == '\n' { '\n' } else { ' ' })
            .collect();
        out.replace_range(start..end, &blank);
        search = start + blank.len();
    }
    out
}

/// One import: the path it names, the line it is on, whether it is a re-export
/// (`pub use`), and the name it brings in.
#[derive(Debug, Clone)]
struct Import {
    path: Vec<String>,
    line: usize,
    re_export: bool,
    name: String,
}

/// The paths a use tree names: `a::{b, c::{d as e, self}}` → a::b, a::c::d (as e), a::c.
fn expand_use_tree(prefix: &[String], tree: &str, out: &mut Vec<(Vec<String>, String)>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let mut base = prefix.to_vec();
        base.extend(segments(tree[..open].trim_end_matches("::")));
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let (mut depth, mut from) = (0usize, 0usize);
        for (k, ch) in inner.char_indices() {
            match ch {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand_use_tree(&base, &inner[from..k], out);
                    from = k + 1;
                }
                _ => {}
            }
        }
        expand_use_tree(&base, &inner[from..], out);
        return;
    }
    if tree.is_empty() {
        return;
    }
    let (path, alias) = match tree.split_once(" as ") {
        Some((p, a)) => (p.trim(), Some(a.trim().to_string())),
        None => (tree, None),
    };
    let mut full = prefix.to_vec();
    for seg in segments(path) {
        if seg != "self" || full.is_empty() {
            full.push(seg);
        }
    }
    let name = alias.unwrap_or_else(|| full.last().cloned().unwrap_or_default());
    out.push((full, name));
}

fn segments(path: &str) -> Vec<String> {
    path.split("::")
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Every import of a file: its `use` declarations and its inline `crate::`/`super::`
/// paths.
fn imports_of(text: &str) -> Vec<Import> {
    let line_of = |at: usize| text[..at].matches('\n').count() + 1;
    let is_ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut imports = Vec::new();
    let mut covered = Vec::new();
    let mut search = 0;
    while let Some(at) = text[search..].find("use ") {
        let start = search + at;
        search = start + 4;
        if text[..start].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let end = item_end(text, start);
        let before = text[..start].trim_end();
        let re_export = before.ends_with("pub")
            || before.ends_with(')') && {
                let open = before.rfind('(').unwrap_or(0);
                before[..open].trim_end().ends_with("pub")
            };
        let tree: String = text[start + 4..end]
            .trim_end_matches(';')
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace(" ::", "::")
            .replace(":: ", "::");
        let mut paths = Vec::new();
        expand_use_tree(&[], &tree, &mut paths);
        for (path, name) in paths {
            imports.push(Import {
                path,
                line: line_of(start),
                re_export,
                name,
            });
        }
        covered.push(start..end);
        search = end;
    }
    for anchor in ["crate::", "super::"] {
        let mut search = 0;
        while let Some(at) = text[search..].find(anchor) {
            let start = search + at;
            search = start + anchor.len();
            if covered.iter().any(|r| r.contains(&start))
                || text[..start].chars().next_back().is_some_and(is_ident)
                || text[..start].ends_with("::")
            {
                continue;
            }
            let len = text[start..]
                .char_indices()
                .find(|&(_, ch)| !(is_ident(ch) || ch == ':'))
                .map_or(text.len() - start, |(k, _)| k);
            let path = segments(&text[start..start + len]);
            imports.push(Import {
                name: path.last().cloned().unwrap_or_default(),
                path,
                line: line_of(start),
                re_export: false,
            });
        }
    }
    imports
}

struct Crate {
    /// Module path → file.
    modules: BTreeMap<Vec<String>, String>,
    /// File → its imports.
    imports: BTreeMap<String, Vec<Import>>,
}

impl Crate {
    fn new(files: &BTreeMap<String, String>) -> Self {
        let modules = files.keys().map(|f| (module_of(f), f.clone())).collect();
        let imports = files
            .iter()
            .map(|(f, src)| {
                (
                    f.clone(),
                    imports_of(&strip_test_items(&strip_literals(src))),
                )
            })
            .collect();
        Self { modules, imports }
    }

    /// `path` as written in `file`, made absolute (`None`: another crate's path).
    fn absolute(&self, file: &str, path: &[String]) -> Option<Vec<String>> {
        let mut module = module_of(file);
        let mut rest = path;
        match rest.first().map(String::as_str) {
            Some("crate") => {
                module.clear();
                rest = &rest[1..];
            }
            Some("super") | Some("self") => {
                while let Some(seg) = rest.first() {
                    match seg.as_str() {
                        "super" => {
                            module.pop();
                        }
                        "self" => {}
                        _ => break,
                    }
                    rest = &rest[1..];
                }
            }
            Some(first) => {
                // A 2018-edition relative path to a child module.
                let mut child = module.clone();
                child.push(first.to_string());
                if !self.modules.contains_key(&child) {
                    return None;
                }
            }
            None => return None,
        }
        module.extend(rest.iter().cloned());
        Some(module)
    }

    /// The file that defines what the absolute `path` names, following re-exports.
    fn defining_file(&self, path: &[String], hops: usize) -> Option<String> {
        let depth = (0..=path.len())
            .rev()
            .find(|&n| self.modules.contains_key(&path[..n]))?;
        let file = self.modules[&path[..depth]].clone();
        let Some(item) = path.get(depth) else {
            return Some(file);
        };
        if hops < 16 {
            let re_export = self.imports[&file]
                .iter()
                .find(|i| i.re_export && &i.name == item);
            if let Some(re) = re_export {
                if let Some(mut target) = self.absolute(&file, &re.path) {
                    target.extend(path[depth + 1..].iter().cloned());
                    if let Some(found) = self.defining_file(&target, hops + 1) {
                        return Some(found);
                    }
                }
            }
        }
        Some(file)
    }

    /// file → (file it depends on → the line that makes the edge).
    fn edges(&self) -> BTreeMap<String, BTreeMap<String, usize>> {
        let mut graph: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        for (file, imports) in &self.imports {
            let out = graph.entry(file.clone()).or_default();
            for import in imports.iter().filter(|i| !i.re_export) {
                let Some(path) = self.absolute(file, &import.path) else {
                    continue;
                };
                if let Some(target) = self.defining_file(&path, 0) {
                    if &target != file {
                        out.entry(target).or_insert(import.line);
                    }
                }
            }
        }
        graph
    }
}

/// Each import circle, as `a.rs -> b.rs -> a.rs (a.rs:3, b.rs:9)`.
fn find_cycles(files: &BTreeMap<String, String>) -> Vec<String> {
    let graph = Crate::new(files).edges();
    // Strongly connected components (Tarjan), then one circle through each.
    struct Tarjan<'g> {
        graph: &'g BTreeMap<String, BTreeMap<String, usize>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        components: Vec<Vec<&'g str>>,
    }
    impl<'g> Tarjan<'g> {
        fn visit(&mut self, v: &'g str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flat_map(|e| e.keys()) {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.components.push(component);
                }
            }
        }
    }
    let mut tarjan = Tarjan {
        graph: &graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for v in graph.keys() {
        if !tarjan.index.contains_key(v.as_str()) {
            tarjan.visit(v);
        }
    }
    tarjan
        .components
        .iter()
        .map(|component| {
            let inside: BTreeSet<&str> = component.iter().copied().collect();
            let cycle = shortest_cycle(&graph, component[0], &inside);
            let lines: Vec<String> = cycle
                .windows(2)
                .map(|w| format!("{}:{}", w[0], graph[w[0]][w[1]]))
                .collect();
            format!(
                "{} (imports at {}; {} files in this circle: {})",
                cycle.join(" -> "),
                lines.join(", "),
                component.len(),
                component.join(", ")
            )
        })
        .collect()
}

/// The shortest way from `start` back to itself inside one component (breadth first).
fn shortest_cycle<'g>(
    graph: &'g BTreeMap<String, BTreeMap<String, usize>>,
    start: &'g str,
    inside: &BTreeSet<&str>,
) -> Vec<&'g str> {
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(v) = queue.pop_front() {
        for w in graph[v].keys().map(String::as_str) {
            if !inside.contains(w) {
                continue;
            }
            if w == start {
                let mut path = vec![start, v];
                let mut at = v;
                while at != start {
                    at = parent[at];
                    path.push(at);
                }
                path.reverse();
                // path now runs start .. v, start reversed: rebuild in order.
                let mut ordered: Vec<&str> = path[..path.len() - 1].to_vec();
                ordered.push(start);
                return ordered;
            }
            if w != start && !parent.contains_key(w) {
                parent.insert(w, v);
                queue.push_back(w);
            }
        }
    }
    vec![start]
}
