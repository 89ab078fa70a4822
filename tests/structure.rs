//! The shape of the source tree, as issue 18 promises it to the next engineer: no non-test
//! source file over 600 lines, no function over 150 lines, and no two source files that import
//! each other, directly or through a chain. It reads both crates' sources as text (`src/` and
//! `ui/src/`); `#[cfg(test)]` items and files whose name holds "tests" are test code and are not
//! counted. A module may exceed a limit only by saying why in its opening comment, on a line
//! starting `//! Longer than`. Every module's opening comment also says what it may import (a
//! `//!` line mentioning "import"; a file pulled in with `include!` says it in `//` lines).
//!
//! Imports are the paths that start with `crate::`, `super::` or `self::`; each resolves to the
//! deepest module file it names. A parent's `mod child;` and relative `pub use child::X`
//! re-exports are not imports (the parent owns the child); a child reaching back through
//! `super::` is.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 150;

/// A module path inside one crate, e.g. `["net", "channel"]`; the crate root is empty.
type ModPath = Vec<String>;

struct SourceFile {
    path: PathBuf,
    /// Lines outside `#[cfg(test)]` items, comments kept.
    lines: Vec<String>,
    module: ModPath,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn is_test_file(path: &Path) -> bool {
    path.file_stem()
        .and_then(|s| s.to_str())
        .is_some_and(|s| s.contains("tests"))
        || path.components().any(|c| c.as_os_str() == "tests")
}

/// Lines that open and close braces, ignoring braces in string and char literals and comments.
fn brace_delta(line: &str) -> (i64, bool) {
    let code = line.split("//").next().unwrap_or("");
    let mut delta = 0;
    let mut opened = false;
    let mut in_str = false;
    let mut prev = ' ';
    let chars: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if in_str {
            if c == '"' && prev != '\\' {
                in_str = false;
            }
        } else if c == '"' {
            in_str = true;
        } else if c == '\'' && i + 2 < chars.len() && chars[i + 2] == '\'' {
            i += 2; // a char literal such as '{'
        } else if c == '{' {
            delta += 1;
            opened = true;
        } else if c == '}' {
            delta -= 1;
        }
        prev = if prev == '\\' && c == '\\' { ' ' } else { c };
        i += 1;
    }
    (delta, opened)
}

/// End (exclusive) of the item starting at `start`: its closing brace, or its `;`.
fn item_end(lines: &[String], start: usize) -> usize {
    let mut depth = 0;
    let mut started = false;
    for (j, line) in lines.iter().enumerate().skip(start) {
        let (delta, opened) = brace_delta(line);
        depth += delta;
        started |= opened;
        if !started && line.trim_end().ends_with(';') {
            return j + 1;
        }
        if started && depth <= 0 {
            return j + 1;
        }
    }
    lines.len()
}

fn strip_test_items(text: &str) -> Vec<String> {
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if lines[i].trim_start().starts_with("#[cfg(test)]") {
            let mut j = i + 1;
            while j < lines.len() && lines[j].trim_start().starts_with("#[") {
                j += 1;
            }
            i = item_end(&lines, j);
            continue;
        }
        out.push(lines[i].clone());
        i += 1;
    }
    out
}

fn sources() -> Vec<SourceFile> {
    let mut files = Vec::new();
    for krate in ["src", "ui/src"] {
        let base = root().join(krate);
        let mut paths = Vec::new();
        rust_files(&base, &mut paths);
        for path in paths {
            let rel = path.strip_prefix(&base).unwrap().with_extension("");
            let mut module: ModPath = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if matches!(
                module.last().map(String::as_str),
                Some("mod" | "lib" | "main")
            ) {
                module.pop();
            }
            // The two crates' module trees are kept apart by prefixing the crate folder.
            module.insert(0, krate.to_owned());
            let text = fs::read_to_string(&path).unwrap();
            files.push(SourceFile {
                lines: strip_test_items(&text),
                path,
                module,
            });
        }
    }
    files
}

fn explains_length(file: &SourceFile) -> bool {
    file.lines
        .iter()
        .take_while(|l| l.starts_with("//!") || l.trim().is_empty())
        .any(|l| l.starts_with("//! Longer than"))
}

fn name(file: &SourceFile) -> String {
    file.path
        .strip_prefix(root())
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn no_source_file_is_over_600_lines_nor_a_function_over_150() {
    let mut long = Vec::new();
    for file in sources() {
        if is_test_file(&file.path) || explains_length(&file) {
            continue;
        }
        if file.lines.len() > MAX_FILE_LINES {
            long.push(format!(
                "{}: {} lines outside tests",
                name(&file),
                file.lines.len()
            ));
        }
        for (i, line) in file.lines.iter().enumerate() {
            let Some(fn_name) = fn_name(line) else {
                continue;
            };
            let len = item_end(&file.lines, i) - i;
            if len > MAX_FN_LINES {
                long.push(format!(
                    "{}:{}: fn {fn_name} is {len} lines",
                    name(&file),
                    i + 1
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "over {MAX_FILE_LINES} lines per file or {MAX_FN_LINES} per function (split it, or say \
         why in a `//! Longer than` line of the module's opening comment):\n{}",
        long.join("\n")
    );
}

/// The name of the function a line declares, if it declares one.
fn fn_name(line: &str) -> Option<&str> {
    let code = line.trim_start();
    if code.starts_with("//") {
        return None;
    }
    let mut words = code.split_whitespace().peekable();
    while let Some(w) = words.next() {
        match w {
            "fn" => {
                let rest = words.next()?;
                let end = rest
                    .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                return (end > 0).then(|| &rest[..end]);
            }
            "pub" | "const" | "async" | "unsafe" | "extern" | "\"C\"" => {}
            w if w.starts_with("pub(") => {}
            _ => return None,
        }
    }
    None
}

/// The module files each file imports from.
fn imports(files: &[SourceFile]) -> BTreeMap<usize, BTreeSet<usize>> {
    let index: BTreeMap<&ModPath, usize> = files
        .iter()
        .enumerate()
        .map(|(i, f)| (&f.module, i))
        .collect();
    let resolve = |path: &[String]| -> Option<usize> {
        (1..=path.len())
            .rev()
            .find_map(|k| index.get(&path[..k].to_vec()).copied())
    };
    let mut graph = BTreeMap::new();
    for (i, file) in files.iter().enumerate() {
        let text: String = file
            .lines
            .iter()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        let mut deps = BTreeSet::new();
        for path in import_paths(&text, &file.module) {
            if let Some(j) = resolve(&path) {
                if j != i {
                    deps.insert(j);
                }
            }
        }
        graph.insert(i, deps);
    }
    graph
}

/// Every `crate::`/`super::`/`self::` path in `text`, made absolute, with the items of a
/// `{...}` group expanded one level.
fn import_paths(text: &str, module: &ModPath) -> Vec<ModPath> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let head = ["crate::", "super::", "self::"]
            .into_iter()
            .find(|h| rest.starts_with(h));
        let at_word_start =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let Some(head) = head.filter(|_| at_word_start) else {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let mut cur: ModPath = match head {
            "crate::" => vec![module[0].clone()],
            "self::" => module.clone(),
            _ => module[..module.len().saturating_sub(1).max(1)].to_vec(),
        };
        let mut j = i + head.len();
        loop {
            let seg_end = text[j..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .map_or(text.len(), |e| j + e);
            let seg = &text[j..seg_end];
            if seg == "super" {
                if cur.len() > 1 {
                    cur.pop();
                }
            } else if !seg.is_empty() {
                cur.push(seg.to_owned());
            }
            j = seg_end;
            if text[j..].starts_with("::{") {
                let close = text[j..].find('}').map_or(text.len(), |e| j + e);
                for item in text[j + 3..close].split(',') {
                    let item = item.split(" as ").next().unwrap_or("").trim();
                    let item: Vec<String> = item
                        .split("::")
                        .map(|s| s.trim_matches(|c: char| !(c.is_alphanumeric() || c == '_')))
                        .filter(|s| !s.is_empty() && *s != "self")
                        .map(str::to_owned)
                        .collect();
                    if !item.is_empty() {
                        let mut p = cur.clone();
                        p.extend(item);
                        out.push(p);
                    }
                }
                j = close;
                break;
            }
            if text[j..].starts_with("::") {
                j += 2;
                continue;
            }
            break;
        }
        out.push(cur);
        i = j.max(i + 1);
    }
    out
}

#[test]
fn no_two_source_files_import_each_other() {
    let files = sources();
    let graph = imports(&files);
    let cycles = strongly_connected(&graph);
    let described: Vec<String> = cycles
        .iter()
        .map(|comp| {
            let mut edges = Vec::new();
            for &a in comp {
                for &b in &graph[&a] {
                    if comp.contains(&b) {
                        edges.push(format!("  {} -> {}", name(&files[a]), name(&files[b])));
                    }
                }
            }
            edges.join("\n")
        })
        .collect();
    assert!(
        cycles.is_empty(),
        "import circles:\n{}",
        described.join("\n\n")
    );
}

/// Tarjan's algorithm: the components with more than one file.
fn strongly_connected(graph: &BTreeMap<usize, BTreeSet<usize>>) -> Vec<Vec<usize>> {
    struct State<'g> {
        graph: &'g BTreeMap<usize, BTreeSet<usize>>,
        index: BTreeMap<usize, usize>,
        low: BTreeMap<usize, usize>,
        stack: Vec<usize>,
        on_stack: BTreeSet<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut State, v: usize) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for &w in &s.graph[&v] {
            if !s.index.contains_key(&w) {
                visit(s, w);
                let low = s.low[&v].min(s.low[&w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(&w) {
                let low = s.low[&v].min(s.index[&w]);
                s.low.insert(v, low);
            }
        }
        if s.low[&v] == s.index[&v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(&w);
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for &v in graph.keys() {
        if !s.index.contains_key(&v) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn the_checks_see_a_circle_and_a_long_function() {
    // The checks must be able to fail: a made-up pair of files that import each other, and a
    // long function, are found.
    let a = SourceFile {
        path: root().join("src/a.rs"),
        lines: vec!["use crate::b::Thing;".into()],
        module: vec!["src".into(), "a".into()],
    };
    let b = SourceFile {
        path: root().join("src/b.rs"),
        lines: vec!["use super::a::{Other, more::Deep};".into()],
        module: vec!["src".into(), "b".into()],
    };
    let graph = imports(&[a, b]);
    assert_eq!(strongly_connected(&graph), vec![vec![1, 0]]);
    let mut body: Vec<String> = vec!["pub(crate) fn long_one(x: u8) {".into()];
    body.extend((0..MAX_FN_LINES).map(|i| format!("    let _v{i} = {{ x }};")));
    body.push("}".into());
    assert_eq!(fn_name(&body[0]), Some("long_one"));
    assert_eq!(item_end(&body, 0), MAX_FN_LINES + 2);
    let stripped =
        strip_test_items("fn a() {}\n#[cfg(test)]\nmod tests {\n    fn b() {}\n}\nfn c() {}");
    assert_eq!(stripped, vec!["fn a() {}", "fn c() {}"]);
}

/// Files pulled into another with `include!("...")`, resolved beside the including file. They
/// cannot hold `//!`, so their opening `//` comment stands for it.
fn included_files(files: &[SourceFile]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for file in files {
        let text = fs::read_to_string(&file.path).unwrap();
        out.extend(include_targets(&file.path, &text));
    }
    out
}

fn include_targets(path: &Path, text: &str) -> Vec<PathBuf> {
    let dir = path.parent().unwrap();
    text.split("include!(\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|target| dir.join(target))
        .collect()
}

/// Whether the opening comment has a line mentioning "import" (any case).
fn says_what_it_imports(file: &SourceFile, included: &BTreeSet<PathBuf>) -> bool {
    let marker = if included.contains(&file.path) {
        "//"
    } else {
        "//!"
    };
    file.lines
        .iter()
        .take_while(|l| l.starts_with(marker) || l.trim().is_empty())
        .any(|l| l.starts_with(marker) && l.to_lowercase().contains("import"))
}

#[test]
fn every_module_says_what_it_may_import() {
    let files = sources();
    let included = included_files(&files);
    let silent: Vec<String> = files
        .iter()
        .filter(|f| !is_test_file(&f.path) && !says_what_it_imports(f, &included))
        .map(name)
        .collect();
    assert!(
        silent.is_empty(),
        "{} modules whose opening comment does not say what they may import:\n  {}",
        silent.len(),
        silent.join("\n  ")
    );
}

#[test]
fn the_import_check_sees_a_module_that_does_not_say() {
    let made_up = |lines: &[&str]| SourceFile {
        path: root().join("src/made_up.rs"),
        lines: lines.iter().map(|l| (*l).to_owned()).collect(),
        module: vec!["src".into(), "made_up".into()],
    };
    let none = BTreeSet::new();
    // "import" only below the opening comment, or in a plain `//` line, does not count.
    let silent = made_up(&["//! Owns made-up things.", "", "use crate::a::Imported;"]);
    assert!(!says_what_it_imports(&silent, &none));
    let plain = made_up(&["// Imports nothing.", "//! Owns made-up things."]);
    assert!(!says_what_it_imports(&plain, &none));
    let says = made_up(&["//! Owns made-up things.", "//! IMPORTS `super::a` only."]);
    assert!(says_what_it_imports(&says, &none));
    // A file another one `include!`s may say it in `//` lines.
    let fragment = made_up(&["// Constants only; imports nothing.", "const A: u8 = 1;"]);
    let included = BTreeSet::from([fragment.path.clone()]);
    assert!(says_what_it_imports(&fragment, &included));
    let including = root().join("src/privacy/special.rs");
    assert_eq!(
        include_targets(&including, "    include!(\"special_ref.rs\");"),
        vec![root().join("src/privacy/special_ref.rs")]
    );
}
