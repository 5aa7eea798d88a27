//! `AWS:File`: files the association's filters name, as upstream's file gatherer finds them.
//!
//! Filters are `[{"Path": …, "Pattern": [globs], "Recursive": bool, "DirScanLimit": n}]`;
//! `$VAR`/`${VAR}` in a path are the agent's environment. A filter whose path is missing is
//! skipped; more than 500 files in all, or more directories than a filter's DirScanLimit
//! (default 5000), fail the whole type with upstream's texts. Symbolic links are never followed
//! into directories (no loops); a link to a file reports its target's size and time.

use super::{Entry, GatherError, Host, entry_of, host_view, rfc3339, under};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Upstream's `FileCountLimit`, over all filters.
const FILE_COUNT_LIMIT: usize = 500;
/// Upstream's `DirScanLimit`, per filter unless it says otherwise.
const DIR_SCAN_LIMIT: u64 = 5000;
/// Entries read from one directory (here and for custom inventory); the rest of a larger one is
/// not looked at (and logged).
const MAX_DIR_ENTRIES: usize = 100_000;

/// One filter of the `files` input.
struct Filter<'a> {
    path: &'a str,
    pattern: Vec<&'a str>,
    recursive: bool,
    dir_scan_limit: u64,
}

impl<'a> Filter<'a> {
    /// The filter in `v`, typed as upstream's `filterObj` (a value of the wrong type fails the
    /// whole input there too); read from a `Value` rather than derived: the agent parses JSON
    /// values already, and a derived deserializer costs kilobytes of binary.
    fn from_value(v: &'a Value) -> Option<Filter<'a>> {
        let v = v.as_object()?;
        let pattern = match v.get("Pattern") {
            None | Some(Value::Null) => Vec::new(),
            Some(p) => p
                .as_array()?
                .iter()
                .map(Value::as_str)
                .collect::<Option<_>>()?,
        };
        let or_null = |key: &str| v.get(key).filter(|x| !x.is_null());
        Some(Filter {
            path: or_null("Path").map_or(Some(""), Value::as_str)?,
            pattern,
            recursive: or_null("Recursive").map_or(Some(false), Value::as_bool)?,
            dir_scan_limit: or_null("DirScanLimit").map_or(Some(DIR_SCAN_LIMIT), Value::as_u64)?,
        })
    }
}

/// Why a scan stopped: a limit fails the type, anything else skips the filter.
enum Stop {
    Limit(&'static str),
    Missing,
    Unreadable(String),
}

pub(super) fn gather(host: &Host<'_>, filters: &str) -> Result<Vec<Entry>, GatherError> {
    if filters.trim().is_empty() {
        return Ok(Vec::new());
    }
    let refused = |why: String| {
        GatherError(format!(
            "AWS:File: the files input is not a JSON list of {{\"Path\": text, \"Pattern\": \
             [texts], \"Recursive\": true or false, \"DirScanLimit\": number}} filters: {why}"
        ))
    };
    let value: Value = serde_json::from_str(filters).map_err(|e| refused(e.to_string()))?;
    let filters = value
        .as_array()
        .ok_or_else(|| refused("not a list".into()))?
        .iter()
        .map(|f| Filter::from_value(f).ok_or_else(|| refused(format!("{f}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let mut found: Vec<PathBuf> = Vec::new();
    for f in &filters {
        let path = expand(f.path);
        if !path.starts_with('/') {
            log::warn!("inventory: AWS:File filter path {path:?} is not absolute; skipped");
            continue;
        }
        let patterns: Vec<Vec<Tok>> = f.pattern.iter().filter_map(|p| parse_or_log(p)).collect();
        let scan = Scan {
            patterns: &patterns,
            files_left: FILE_COUNT_LIMIT - found.len(),
            dirs_left: f.dir_scan_limit,
        };
        match scan.run(&under(host.root, Path::new(&path)), f.recursive) {
            Ok(files) => {
                for file in files {
                    if !found.contains(&file) {
                        found.push(file);
                    }
                }
            }
            Err(Stop::Limit(text)) => {
                return Err(GatherError(format!(
                    "AWS:File: {text} while scanning {path}: narrow the filter's Path or \
                     Pattern, or raise its DirScanLimit"
                )));
            }
            Err(Stop::Missing) => log::warn!("inventory: AWS:File Path {path} does not exist!"),
            Err(Stop::Unreadable(why)) => log::warn!("inventory: AWS:File filter {path}: {why}"),
        }
    }
    Ok(found.iter().filter_map(|f| entry(host.root, f)).collect())
}

struct Scan<'a> {
    patterns: &'a [Vec<Tok>],
    files_left: usize,
    dirs_left: u64,
}

impl Scan<'_> {
    /// The matching files under `dir` (of it alone unless `recursive`), as paths under the root.
    fn run(mut self, dir: &Path, recursive: bool) -> Result<Vec<PathBuf>, Stop> {
        if !dir.exists() {
            return Err(Stop::Missing);
        }
        let mut out = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        let mut top = true;
        while let Some(dir) = pending.pop() {
            if recursive {
                self.dirs_left = self
                    .dirs_left
                    .checked_sub(1)
                    .ok_or(Stop::Limit("Directory Scan Limit Exceeded"))?;
            }
            let entries = match read_sorted(&dir) {
                Ok(entries) => entries,
                // Upstream's walk skips what it cannot read below the filter's own directory.
                Err(e) if !top => {
                    log::warn!("inventory: AWS:File cannot read {}: {e}", dir.display());
                    continue;
                }
                Err(e) => {
                    return Err(Stop::Unreadable(format!(
                        "cannot read {}: {e}",
                        dir.display()
                    )));
                }
            };
            let mut subdirs = Vec::new();
            for (name, is_dir) in entries {
                let path = dir.join(&name);
                if is_dir {
                    subdirs.push(path);
                } else if self.patterns.iter().any(|p| matches(p, &name)) {
                    if out.len() == self.files_left {
                        return Err(Stop::Limit("File Count Limit Exceeded"));
                    }
                    out.push(path);
                }
            }
            if recursive {
                pending.extend(subdirs.into_iter().rev());
                // Each will count: fail now rather than hold more than the limit in memory.
                if pending.len() as u64 > self.dirs_left {
                    return Err(Stop::Limit("Directory Scan Limit Exceeded"));
                }
            }
            top = false;
        }
        Ok(out)
    }
}

/// A directory's entries by name, each with whether it is a directory (links are not followed).
pub(super) fn read_sorted(dir: &Path) -> std::io::Result<Vec<(String, bool)>> {
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir)? {
        if entries.len() == MAX_DIR_ENTRIES {
            log::warn!(
                "inventory: looked at the first {MAX_DIR_ENTRIES} entries of {} only",
                dir.display()
            );
            break;
        }
        let e = e?;
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        entries.push((e.file_name().to_string_lossy().into_owned(), is_dir));
    }
    entries.sort_unstable();
    Ok(entries)
}

/// Upstream's `FileData`: every attribute is sent; Unix fills Name, Size, ModificationTime and
/// InstalledDir. LastAccessTime stays empty as upstream's: it would change the content hash at
/// every read of the file and defeat the hash-only re-sends.
fn entry(root: &Path, full: &Path) -> Option<Entry> {
    let meta = match std::fs::metadata(full) {
        Ok(m) => m,
        Err(e) => {
            log::warn!("inventory: AWS:File cannot stat {}: {e}", full.display());
            return None;
        }
    };
    let modified = meta.modified().map(rfc3339).unwrap_or_default();
    let dir = full
        .parent()
        .map(|d| host_view(root, d))
        .unwrap_or_default();
    Some(entry_of(&[
        ("Name", &full.file_name()?.to_string_lossy()),
        ("Size", &meta.len().to_string()),
        ("ModificationTime", &modified),
        ("InstalledDir", &dir.to_string_lossy()),
        ("Description", ""),
        ("FileVersion", ""),
        ("InstalledDate", ""),
        ("LastAccessTime", ""),
        ("ProductName", ""),
        ("CompanyName", ""),
        ("ProductVersion", ""),
        ("ProductLanguage", ""),
    ]))
}

/// Go's `os.Expand` with the environment: `${NAME}` and `$NAME`; an unset variable is empty, a
/// `$` not followed by a name stays.
fn expand(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut rest = path;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, used) = if let Some(braced) = after.strip_prefix('{') {
            match braced.find('}') {
                Some(end) => (&braced[..end], end + 2),
                None => ("", 0),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], end)
        };
        if name.is_empty() {
            out.push('$');
        } else {
            out.push_str(&std::env::var(name).unwrap_or_default());
        }
        rest = &after[used..];
    }
    out.push_str(rest);
    out
}

/// One element of a glob pattern (Go's `filepath.Match` syntax).
#[derive(Debug, PartialEq)]
enum Tok {
    Star,
    Any,
    Lit(char),
    Class {
        negated: bool,
        ranges: Vec<(char, char)>,
    },
}

impl Tok {
    fn accepts(&self, c: char) -> bool {
        match self {
            Tok::Star | Tok::Any => true,
            Tok::Lit(l) => *l == c,
            Tok::Class { negated, ranges } => {
                ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
            }
        }
    }
}

fn parse_or_log(pattern: &str) -> Option<Vec<Tok>> {
    let toks = parse(pattern);
    if toks.is_none() {
        log::warn!(
            "inventory: AWS:File pattern {pattern:?} is malformed (syntax error in pattern); skipped"
        );
    }
    toks
}

/// The pattern's elements, or `None` for Go's `ErrBadPattern` (a lone `\`, an open or empty `[`).
fn parse(pattern: &str) -> Option<Vec<Tok>> {
    let mut chars = pattern.chars();
    let mut toks = Vec::new();
    while let Some(c) = chars.next() {
        toks.push(match c {
            '*' => Tok::Star,
            '?' => Tok::Any,
            '\\' => Tok::Lit(chars.next()?),
            '[' => class(&mut chars)?,
            c => Tok::Lit(c),
        });
    }
    Some(toks)
}

/// The rest of a `[...]` class after its `[`.
fn class(chars: &mut std::str::Chars<'_>) -> Option<Tok> {
    let mut negated = false;
    let mut ranges = Vec::new();
    let mut first = true;
    loop {
        let mut c = chars.next()?;
        if first && c == '^' {
            negated = true;
            c = chars.next()?;
        }
        first = false;
        if c == ']' {
            return (!ranges.is_empty()).then_some(Tok::Class { negated, ranges });
        }
        let lo = if c == '\\' { chars.next()? } else { c };
        let mut ahead = chars.clone();
        let hi = if ahead.next() == Some('-') && ahead.clone().next() != Some(']') {
            chars.next();
            match chars.next()? {
                '\\' => chars.next()?,
                h => h,
            }
        } else {
            lo
        };
        ranges.push((lo, hi));
    }
}

/// Whether `name` matches all of `toks` (`*` backtracks to its last position only: linear).
fn matches(toks: &[Tok], name: &str) -> bool {
    let s: Vec<char> = name.chars().collect();
    let (mut t, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        match toks.get(t) {
            Some(Tok::Star) => {
                star = Some((t, i));
                t += 1;
                continue;
            }
            Some(tok) if tok.accepts(s[i]) => {
                t += 1;
                i += 1;
                continue;
            }
            _ => {}
        }
        match star {
            Some((st, si)) => {
                star = Some((st, si + 1));
                t = st + 1;
                i = si + 1;
            }
            None => return false,
        }
    }
    toks[t.min(toks.len())..]
        .iter()
        .all(|tok| *tok == Tok::Star)
}

#[cfg(test)]
mod tests {
    use super::super::testing::{root, write};
    use super::*;

    fn run(root: &Path, filters: &str) -> Result<Vec<Entry>, GatherError> {
        gather(
            &Host {
                root,
                agent_version: "1",
            },
            filters,
        )
    }

    fn names(entries: &[Entry]) -> Vec<String> {
        let mut n: Vec<String> = entries
            .iter()
            .map(|e| format!("{}/{}", e["InstalledDir"], e["Name"]))
            .collect();
        n.sort();
        n
    }

    fn tree(name: &str) -> PathBuf {
        let root = root(name);
        write(&root, "/opt/app/a.conf", "12345");
        write(&root, "/opt/app/b.txt", "x");
        write(&root, "/opt/app/sub/c.conf", "");
        write(&root, "/opt/app/sub/deep/d.CONF", "");
        write(&root, "/opt/app/sub/deep/e.conf", "");
        root
    }

    #[test]
    fn a_filter_lists_matching_files_with_upstreams_attributes() {
        let root = tree("files-flat");
        let got = run(&root, r#"[{"Path": "/opt/app", "Pattern": ["*.conf"]}]"#).unwrap();
        assert_eq!(
            names(&got),
            ["/opt/app/a.conf"],
            "not recursive: the top directory only"
        );
        let e = &got[0];
        assert_eq!(e.len(), 12, "every FileData attribute: {e:?}");
        assert_eq!(e["Size"], "5");
        assert_eq!(e["LastAccessTime"], "");
        let mtime = std::fs::metadata(root.join("opt/app/a.conf"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(e["ModificationTime"], rfc3339(mtime));
        assert!(e["ModificationTime"].ends_with('Z'));
    }

    #[test]
    fn recursive_filters_walk_without_following_directory_links() {
        let root = tree("files-rec");
        // A loop back to the top: followed, it would never end.
        std::os::unix::fs::symlink(root.join("opt/app"), root.join("opt/app/sub/loop")).unwrap();
        std::os::unix::fs::symlink(root.join("opt/app/a.conf"), root.join("opt/app/link.conf"))
            .unwrap();
        let filters = r#"[{"Path": "/opt/app", "Pattern": ["*.conf", "?.CONF"], "Recursive": true},
                          {"Path": "/opt/app/sub", "Pattern": ["c.*"]}]"#;
        let got = run(&root, filters).unwrap();
        assert_eq!(
            names(&got),
            [
                "/opt/app/a.conf",
                "/opt/app/link.conf",
                "/opt/app/sub/c.conf",
                "/opt/app/sub/deep/d.CONF",
                "/opt/app/sub/deep/e.conf",
            ],
            "c.conf once although two filters find it"
        );
        let link = got.iter().find(|e| e["Name"] == "link.conf").unwrap();
        assert_eq!(link["Size"], "5", "a link to a file reports its target");
    }

    #[test]
    fn limits_fail_the_type_with_upstreams_texts() {
        let root = tree("files-limits");
        let dirs =
            r#"[{"Path": "/opt/app", "Pattern": ["*"], "Recursive": true, "DirScanLimit": 2}]"#;
        let err = run(&root, dirs).unwrap_err();
        assert!(
            err.0.contains("Directory Scan Limit Exceeded") && err.0.contains("/opt/app"),
            "{err}"
        );
        let three =
            r#"[{"Path": "/opt/app", "Pattern": ["*"], "Recursive": true, "DirScanLimit": 3}]"#;
        assert_eq!(
            run(&root, three).unwrap().len(),
            5,
            "3 directories are within a limit of 3"
        );
        for n in 0..FILE_COUNT_LIMIT {
            write(&root, &format!("/many/{n}.log"), "");
        }
        let many = r#"[{"Path": "/many", "Pattern": ["*.log"]}]"#;
        assert_eq!(run(&root, many).unwrap().len(), FILE_COUNT_LIMIT);
        let more =
            r#"[{"Path": "/many", "Pattern": ["*.log"]}, {"Path": "/opt/app", "Pattern": ["*"]}]"#;
        let err = run(&root, more).unwrap_err();
        assert!(err.0.contains("File Count Limit Exceeded"), "{err}");
    }

    #[test]
    fn bad_filters_are_refused_or_skipped() {
        let root = tree("files-bad");
        let err = run(&root, r#"{"Path": "/opt"}"#).unwrap_err();
        assert!(
            err.0.contains("not a JSON list") && err.0.contains("not a list"),
            "{err}"
        );
        for typo in [
            r#"[{"Path": 3}]"#,
            r#"[{"Path": "/opt/app", "Pattern": "*.conf"}]"#,
            r#"[7]"#,
        ] {
            let err = run(&root, typo).unwrap_err();
            assert!(err.0.contains("not a JSON list"), "{typo}: {err}");
        }
        let skipped = r#"[{"Path": "/nowhere", "Pattern": ["*"]}, {"Path": "opt/app", "Pattern": ["*"]},
                          {"Path": "/opt/app", "Pattern": ["[", "b.*"]}]"#;
        assert_eq!(names(&run(&root, skipped).unwrap()), ["/opt/app/b.txt"]);
        assert!(run(&root, "  ").unwrap().is_empty());
    }

    #[test]
    fn paths_expand_the_environment() {
        let root = tree("files-env");
        let home = std::env::var("HOME").unwrap_or_default();
        assert_eq!(expand("$HOME/x"), format!("{home}/x"));
        assert_eq!(expand("${HOME}x"), format!("{home}x"));
        assert_eq!(expand("/a/$/b$"), "/a/$/b$");
        assert_eq!(expand("/a/${SSM_LITE_UNSET_VAR}/b"), "/a//b");
        let got = run(
            &root,
            r#"[{"Path": "/opt/${SSM_LITE_UNSET_VAR}app", "Pattern": ["a*"]}]"#,
        )
        .unwrap();
        assert_eq!(names(&got), ["/opt/app/a.conf"]);
    }

    #[test]
    fn globs_follow_gos_filepath_match() {
        let ok = |p: &str, s: &str| matches(&parse(p).unwrap(), s);
        assert!(ok("*.conf", "a.conf") && !ok("*.conf", "a.conf.bak"));
        assert!(ok("a*b*c", "aXXbYYbc") && !ok("a*b*c", "aXXbYY"));
        assert!(ok("?.txt", "é.txt") && !ok("?.txt", "ab.txt"));
        assert!(ok("[a-c]x", "bx") && !ok("[a-c]x", "dx"));
        assert!(ok("[^a-c]x", "dx") && !ok("[^a-c]x", "ax"));
        assert!(ok(r"\*", "*") && !ok(r"\*", "a"));
        assert!(ok("[-]", "-") && ok("*", "") && !ok("", "a"));
        for bad in ["[", "[]", "[a-", "\\", "a["] {
            assert!(parse(bad).is_none(), "{bad}");
        }
        let stars = format!("{}b", "*a".repeat(30));
        assert!(!ok(&stars, &"a".repeat(5000)), "linear, not exponential");
    }
}
