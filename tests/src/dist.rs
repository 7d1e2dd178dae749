//! Readers for the distribution files (`Dockerfile`, `.dockerignore`,
//! `deploy/compose.yaml`, `deploy/roost.service`), small enough to trust and
//! strict about what they do not understand: a construct they cannot read is
//! an error, never silently skipped. Used by `tests/tests/dist.rs`.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context, Result};

/// One Dockerfile instruction, continuation lines joined.
#[derive(Debug, Clone)]
pub struct Instruction {
    /// Upper-cased (`RUN`, `COPY`, ...).
    pub keyword: String,
    /// Everything after the keyword, trimmed.
    pub args: String,
    /// 1-based line of the keyword.
    pub line: usize,
}

/// A build stage: `FROM base [AS name]` and what follows it.
#[derive(Debug)]
pub struct Stage {
    pub base: String,
    pub name: Option<String>,
    pub instructions: Vec<Instruction>,
}

impl Stage {
    pub fn all<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = &'a Instruction> + 'a {
        self.instructions
            .iter()
            .filter(move |i| i.keyword == keyword)
    }

    /// The last `keyword` instruction (the one that takes effect).
    pub fn last(&self, keyword: &str) -> Option<&Instruction> {
        self.instructions
            .iter()
            .rev()
            .find(|i| i.keyword == keyword)
    }
}

/// Splits a Dockerfile into stages. Comment lines (parser directives
/// included) and blank lines are dropped, as Docker drops them, also inside
/// a `\` continuation. Only `ARG` may come before the first `FROM`; heredocs
/// are refused.
pub fn parse_dockerfile(text: &str) -> Result<Vec<Stage>> {
    let mut stages: Vec<Stage> = Vec::new();
    let mut logical = String::new();
    let mut first_line = 0;
    for (n, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if logical.is_empty() {
            first_line = n + 1;
        }
        match raw.trim_end().strip_suffix('\\') {
            Some(part) => {
                logical.push_str(part.trim());
                logical.push(' ');
            }
            None => {
                logical.push_str(trimmed);
                push_instruction(&mut stages, &logical, first_line)?;
                logical.clear();
            }
        }
    }
    ensure!(logical.is_empty(), "the last instruction ends with `\\`");
    ensure!(!stages.is_empty(), "no FROM");
    Ok(stages)
}

fn push_instruction(stages: &mut Vec<Stage>, logical: &str, line: usize) -> Result<()> {
    let (keyword, args) = logical
        .split_once(char::is_whitespace)
        .unwrap_or((logical, ""));
    let keyword = keyword.to_ascii_uppercase();
    let args = args.trim().to_owned();
    ensure!(
        !args.contains("<<"),
        "line {line}: heredocs are not read here"
    );
    if keyword == "FROM" {
        let words: Vec<&str> = args
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let (base, name) = match words.as_slice() {
            [base] => (*base, None),
            [base, as_, name] if as_.eq_ignore_ascii_case("as") => {
                (*base, Some((*name).to_owned()))
            }
            _ => bail!("line {line}: cannot read FROM {args}"),
        };
        stages.push(Stage {
            base: base.to_owned(),
            name,
            instructions: Vec::new(),
        });
        return Ok(());
    }
    match stages.last_mut() {
        Some(stage) => stage.instructions.push(Instruction {
            keyword,
            args,
            line,
        }),
        None if keyword == "ARG" => {}
        None => bail!("line {line}: {keyword} before the first FROM"),
    }
    Ok(())
}

/// The JSON array of an exec-form instruction (`["a", "b"]`); shell form is
/// an error (it would run under `/bin/sh -c`, which does not pass SIGTERM on).
pub fn exec_form(args: &str) -> Result<Vec<String>> {
    ensure!(
        args.trim_start().starts_with('['),
        "not in exec form (a JSON array): {args}"
    );
    serde_json::from_str(args).with_context(|| format!("not a JSON array of strings: {args}"))
}

/// `HEALTHCHECK [--option=value ...] CMD [...]`.
#[derive(Debug)]
pub struct Healthcheck {
    pub options: BTreeMap<String, String>,
    pub command: Vec<String>,
}

pub fn parse_healthcheck(args: &str) -> Result<Healthcheck> {
    let mut options = BTreeMap::new();
    let mut rest = args.trim();
    while let Some(option) = rest.strip_prefix("--") {
        let (option, after) = option
            .split_once(char::is_whitespace)
            .unwrap_or((option, ""));
        let (key, value) = option
            .split_once('=')
            .with_context(|| format!("HEALTHCHECK option without a value: --{option}"))?;
        options.insert(key.to_owned(), value.to_owned());
        rest = after.trim_start();
    }
    let command = rest
        .strip_prefix("CMD")
        .with_context(|| format!("HEALTHCHECK without CMD (NONE?): {args}"))?;
    Ok(Healthcheck {
        options,
        command: exec_form(command)?,
    })
}

/// The value of `--flag value` or `--flag=value` in `args`.
pub fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let prefix = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(&prefix)
        }
    })
}

/// Replaces the value of `--flag` (either form); returns the old one.
pub fn replace_flag(args: &mut [String], flag: &str, value: &str) -> Result<String> {
    let prefix = format!("{flag}=");
    for i in 0..args.len() {
        if args[i] == flag {
            let slot = args
                .get_mut(i + 1)
                .with_context(|| format!("{flag} without a value"))?;
            return Ok(std::mem::replace(slot, value.to_owned()));
        }
        if let Some(old) = args[i].strip_prefix(&prefix) {
            let old = old.to_owned();
            args[i] = format!("{flag}={value}");
            return Ok(old);
        }
    }
    bail!("no {flag} in {args:?}")
}

/// `.dockerignore` rules: `*` and `?` within a path segment, `**` for any
/// number of segments, `!` to re-include; the last matching rule wins, and a
/// rule that matches a directory matches everything under it.
pub struct Ignore {
    rules: Vec<(bool, Vec<String>)>,
}

impl Ignore {
    pub fn parse(text: &str) -> Result<Ignore> {
        let mut rules = Vec::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            ensure!(
                !line.contains(['[', '\\']),
                "character classes and escapes are not read here: {line}"
            );
            let (exclude, pattern) = match line.strip_prefix('!') {
                Some(p) => (false, p.trim()),
                None => (true, line),
            };
            let segments = pattern
                .split('/')
                .filter(|s| !s.is_empty() && *s != ".")
                .map(str::to_owned)
                .collect();
            rules.push((exclude, segments));
        }
        Ok(Ignore { rules })
    }

    /// Whether `path` (relative, `/`-separated) is left out of the context.
    pub fn excludes(&self, path: &str) -> bool {
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let mut excluded = false;
        for (exclude, pattern) in &self.rules {
            if (1..=segments.len()).any(|n| glob(pattern, &segments[..n])) {
                excluded = *exclude;
            }
        }
        excluded
    }
}

fn glob(pattern: &[String], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => (0..=path.len()).any(|i| glob(rest, &path[i..])),
        Some((p, rest)) => match path.split_first() {
            Some((segment, path_rest)) => {
                wildcard(p.as_bytes(), segment.as_bytes()) && glob(rest, path_rest)
            }
            None => false,
        },
    }
}

fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| wildcard(rest, &text[i..])),
        Some((b'?', rest)) => !text.is_empty() && wildcard(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && wildcard(rest, &text[1..]),
    }
}

/// A systemd unit file: section → `(key, value)` in file order (a key may
/// repeat). Continuation lines and quoting are refused.
pub struct Unit {
    sections: BTreeMap<String, Vec<(String, String)>>,
}

impl Unit {
    pub fn parse(text: &str) -> Result<Unit> {
        let mut sections: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
        let mut current: Option<String> = None;
        for (n, line) in text.lines().enumerate().map(|(n, l)| (n + 1, l.trim())) {
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            ensure!(
                !line.ends_with('\\'),
                "line {n}: continuation lines are not read here"
            );
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                current = Some(name.to_owned());
                continue;
            }
            let section = current
                .clone()
                .with_context(|| format!("line {n}: outside a section"))?;
            let (key, value) = line
                .split_once('=')
                .with_context(|| format!("line {n}: not key=value: {line}"))?;
            sections
                .entry(section)
                .or_default()
                .push((key.trim().to_owned(), value.trim().to_owned()));
        }
        Ok(Unit { sections })
    }

    /// Every value of `key` in `section`, in order.
    pub fn values(&self, section: &str, key: &str) -> Vec<&str> {
        self.sections
            .get(section)
            .map(|entries| {
                entries
                    .iter()
                    .filter(|(k, _)| k == key)
                    .map(|(_, v)| v.as_str())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The value that takes effect (the last), if any.
    pub fn value(&self, section: &str, key: &str) -> Option<&str> {
        self.values(section, key).last().copied()
    }
}

/// A systemd boolean.
pub fn unit_bool(value: Option<&str>) -> bool {
    matches!(value, Some("yes" | "true" | "on" | "1"))
}

/// The significant lines of a YAML file: indentation and text, comments and
/// blank lines dropped. Enough to walk the block structure of a compose
/// file written in block style; values are read as the text after `key:`.
pub struct Yaml<'a> {
    lines: Vec<(usize, &'a str)>,
}

impl<'a> Yaml<'a> {
    pub fn parse(text: &'a str) -> Result<Yaml<'a>> {
        let mut lines = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let body = raw.trim_start();
            if body.is_empty() || body.starts_with('#') {
                continue;
            }
            ensure!(!raw.contains('\t'), "line {}: tabs in YAML", n + 1);
            lines.push((raw.len() - body.len(), body.trim_end()));
        }
        Ok(Yaml { lines })
    }

    /// The lines of the block under `path` (e.g. `["services", "roost",
    /// "environment"]`), each a direct child of that key.
    pub fn block(&self, path: &[&str]) -> Result<Vec<&'a str>> {
        let mut range = 0..self.lines.len();
        for key in path {
            let children = self.children(range.clone());
            let at = children
                .into_iter()
                .find(|&i| self.lines[i].1 == format!("{key}:"))
                .with_context(|| format!("no block `{key}:` at {path:?}"))?;
            let indent = self.lines[at].0;
            let end = (at + 1..self.lines.len())
                .find(|&i| self.lines[i].0 <= indent)
                .unwrap_or(self.lines.len());
            range = at + 1..end;
        }
        Ok(self
            .children(range)
            .into_iter()
            .map(|i| self.lines[i].1)
            .collect())
    }

    /// The value of `key: value` directly under `path`.
    pub fn scalar(&self, path: &[&str], key: &str) -> Result<&'a str> {
        let prefix = format!("{key}:");
        self.block(path)?
            .into_iter()
            .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::trim))
            .filter(|v| !v.is_empty())
            .with_context(|| format!("no `{key}: value` under {path:?}"))
    }

    fn children(&self, range: std::ops::Range<usize>) -> Vec<usize> {
        let indent = range.clone().map(|i| self.lines[i].0).min();
        range.filter(|&i| Some(self.lines[i].0) == indent).collect()
    }
}

/// A YAML scalar without its quotes.
pub fn unquote(value: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner;
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_rules() {
        let ignore = Ignore::parse("**/target\nroost-data\n*.md\n!README.md\n").expect("parses");
        assert!(ignore.excludes("target/debug/roost"));
        assert!(ignore.excludes("fuzz/target/x"));
        assert!(ignore.excludes("roost-data/catalog"));
        assert!(!ignore.excludes("server/roost-data"));
        assert!(ignore.excludes("CHANGELOG.md"));
        assert!(!ignore.excludes("README.md"));
        assert!(!ignore.excludes("server/src/main.rs"));
        assert!(!ignore.excludes("targets/x"));
    }

    #[test]
    fn dockerfile_stages_and_continuations() {
        let text = "# syntax=docker/dockerfile:1\nARG V=1\nFROM a:1 AS build\nRUN one \\\n  # inside\n  two\nFROM b\nCMD [\"x\", \"y\"]\n";
        let stages = parse_dockerfile(text).expect("parses");
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[0].name.as_deref(), Some("build"));
        assert_eq!(stages[0].instructions[0].args, "one two");
        assert_eq!(stages[0].instructions[0].line, 4);
        let cmd = stages[1].last("CMD").expect("CMD");
        assert_eq!(exec_form(&cmd.args).expect("exec"), ["x", "y"]);
        assert!(exec_form("x y").is_err());
    }

    #[test]
    fn yaml_blocks() {
        let text = "a:\n  b:\n    c: 1\n    # no\n    d:\n      - e\n  f: 2\ng:\n";
        let yaml = Yaml::parse(text).expect("parses");
        assert_eq!(yaml.block(&["a", "b"]).expect("block"), ["c: 1", "d:"]);
        assert_eq!(yaml.block(&["a", "b", "d"]).expect("block"), ["- e"]);
        assert_eq!(yaml.scalar(&["a"], "f").expect("f"), "2");
        assert!(yaml.block(&["a", "x"]).is_err());
    }
}
