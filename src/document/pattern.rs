//! A small regular-expression engine for the part of Go's regexp syntax that SSM documents use in
//! `allowedPattern` (and for our own fixed patterns). Upstream checks values with Go's
//! `regexp.MatchString`: unanchored, `^`/`$` only at the ends of the text, `.` not matching `\n`,
//! negated classes matching `\n`, `\s` = `[\t\n\f\r ]`, `\d` = `[0-9]`, `\w` = `[0-9A-Za-z_]`.
//!
//! Supported: literals, `.`, `[...]` with ranges, `^` negation and `\d \s \w \D \S \W` inside,
//! `\d \s \w \D \S \W` outside, escaped punctuation, `\n \t \r \f \v \a`, `\A`, `\z`, groups
//! `(...)` and `(?:...)`, `|`, `? * +`, `{m}` `{m,}` `{m,n}` (lazy forms give the same yes/no).
//! Anything else (flags such as `(?i)`, `\b`, `\p{..}`, `\x..`, POSIX `[[:alpha:]]`) is
//! [`Unsupported`]: the caller then skips the check rather than guess.
//!
//! Matching simulates the compiled automaton over all positions at once (a Pike VM), like Go:
//! time is linear in the text for a given pattern and nothing recurses per character, so neither
//! long values nor pathological patterns can exhaust the stack or backtrack exponentially.

use std::fmt;

/// Go rejects repeat counts above 1000.
const MAX_REPEAT: u32 = 1000;
/// Bound on the compiled program (counted repeats copy their operand), hence on matching time.
const MAX_PROGRAM: usize = 10_000;
/// Bound on group nesting, hence on recursion while parsing and compiling.
const MAX_GROUP_NESTING: u32 = 100;

/// A compiled pattern.
#[derive(Debug)]
pub(crate) struct Pattern {
    program: Vec<Inst>,
}

/// The pattern uses syntax outside the supported subset, or is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unsupported(String);

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug)]
enum Node {
    Char(Single),
    Start,
    End,
    Concat(Vec<Node>),
    Alt(Vec<Node>),
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
    },
}

/// Something that matches exactly one character.
#[derive(Debug, Clone)]
enum Single {
    Literal(char),
    /// `.`: any character but `\n`.
    Any,
    Class(Class),
}

#[derive(Debug, Clone)]
struct Class {
    negated: bool,
    items: Vec<Item>,
}

#[derive(Debug, Clone)]
enum Item {
    Range(char, char),
    /// `\d`, `\s`, `\w`, or (when `true`) their negations.
    Perl(Perl, bool),
}

#[derive(Debug, Clone, Copy)]
enum Perl {
    Digit,
    Space,
    Word,
}

impl Perl {
    fn from_escape(c: char) -> Option<Item> {
        let perl = match c.to_ascii_lowercase() {
            'd' => Perl::Digit,
            's' => Perl::Space,
            'w' => Perl::Word,
            _ => return None,
        };
        Some(Item::Perl(perl, c.is_ascii_uppercase()))
    }

    fn accepts(self, c: char) -> bool {
        match self {
            Perl::Digit => c.is_ascii_digit(),
            Perl::Space => matches!(c, '\t' | '\n' | '\x0C' | '\r' | ' '),
            Perl::Word => c.is_ascii_alphanumeric() || c == '_',
        }
    }
}

impl Single {
    fn accepts(&self, c: char) -> bool {
        match self {
            Single::Literal(l) => *l == c,
            Single::Any => c != '\n',
            Single::Class(class) => {
                let hit = class.items.iter().any(|item| match item {
                    Item::Range(lo, hi) => (*lo..=*hi).contains(&c),
                    Item::Perl(perl, negated) => perl.accepts(c) != *negated,
                });
                hit != class.negated
            }
        }
    }
}

/// One instruction of the automaton; jump targets are program indices.
#[derive(Debug)]
enum Inst {
    Char(Single),
    Split(usize, usize),
    Jump(usize),
    Start,
    End,
    Match,
}

impl Pattern {
    pub(crate) fn parse(source: &str) -> Result<Pattern, Unsupported> {
        let mut parser = Parser {
            chars: source.chars().collect(),
            pos: 0,
            nesting: 0,
        };
        let root = parser.alternation()?;
        if let Some(c) = parser.peek() {
            return Err(parser.error(&format!("unexpected {c:?}")));
        }
        let mut program = Vec::new();
        emit(&root, &mut program)?;
        push(&mut program, Inst::Match)?;
        Ok(Pattern { program })
    }

    /// Go `MatchString`: whether the pattern matches anywhere in `text`.
    pub(crate) fn is_match(&self, text: &str) -> bool {
        let len = text.chars().count();
        let mut current = Threads::new(self.program.len());
        let mut next = Threads::new(self.program.len());
        let mut chars = text.chars();
        for pos in 0..=len {
            // Unanchored: a new attempt starts at every position.
            if self.follow(&mut current, 0, pos, len) {
                return true;
            }
            let Some(c) = chars.next() else { break };
            next.clear();
            for &pc in &current.list {
                if matches!(self.program.get(pc), Some(Inst::Char(single)) if single.accepts(c))
                    && self.follow(&mut next, pc + 1, pos + 1, len)
                {
                    return true;
                }
            }
            std::mem::swap(&mut current, &mut next);
        }
        false
    }

    /// Adds `pc` and everything reachable from it without reading a character to `threads`;
    /// true when that reaches `Match`.
    fn follow(&self, threads: &mut Threads, pc: usize, pos: usize, len: usize) -> bool {
        let mut pending = vec![pc];
        while let Some(pc) = pending.pop() {
            if !threads.insert(pc) {
                continue;
            }
            match self.program.get(pc) {
                Some(Inst::Match) => return true,
                Some(Inst::Jump(to)) => pending.push(*to),
                Some(Inst::Split(first, second)) => pending.extend([*second, *first]),
                Some(Inst::Start) if pos == 0 => pending.push(pc + 1),
                Some(Inst::End) if pos == len => pending.push(pc + 1),
                _ => {}
            }
        }
        false
    }
}

/// The set of program positions alive at one text position, in insertion order.
struct Threads {
    list: Vec<usize>,
    present: Vec<bool>,
}

impl Threads {
    fn new(size: usize) -> Threads {
        Threads {
            list: Vec::with_capacity(size),
            present: vec![false; size],
        }
    }

    fn insert(&mut self, pc: usize) -> bool {
        match self.present.get_mut(pc) {
            Some(present) if !*present => {
                *present = true;
                self.list.push(pc);
                true
            }
            _ => false,
        }
    }

    fn clear(&mut self) {
        for pc in self.list.drain(..) {
            if let Some(present) = self.present.get_mut(pc) {
                *present = false;
            }
        }
    }
}

fn push(program: &mut Vec<Inst>, inst: Inst) -> Result<usize, Unsupported> {
    if program.len() >= MAX_PROGRAM {
        return Err(Unsupported("pattern too large".to_owned()));
    }
    program.push(inst);
    Ok(program.len() - 1)
}

/// Points the `Split` (second branch) or `Jump` at `at` to the end of the program so far.
fn patch(program: &mut [Inst], at: usize) {
    let to = program.len();
    match program.get_mut(at) {
        Some(Inst::Split(_, second)) => *second = to,
        Some(Inst::Jump(target)) => *target = to,
        _ => {}
    }
}

/// Pushes a `Split` whose first branch is the next instruction; the second is patched later.
fn split(program: &mut Vec<Inst>) -> Result<usize, Unsupported> {
    let next = program.len() + 1;
    push(program, Inst::Split(next, 0))
}

fn emit(node: &Node, program: &mut Vec<Inst>) -> Result<(), Unsupported> {
    match node {
        Node::Char(single) => push(program, Inst::Char(single.clone())).map(drop),
        Node::Start => push(program, Inst::Start).map(drop),
        Node::End => push(program, Inst::End).map(drop),
        Node::Concat(nodes) => nodes.iter().try_for_each(|node| emit(node, program)),
        Node::Alt(alternatives) => {
            let mut exits = Vec::new();
            for (index, alternative) in alternatives.iter().enumerate() {
                if index + 1 == alternatives.len() {
                    emit(alternative, program)?;
                    break;
                }
                let at = split(program)?;
                emit(alternative, program)?;
                exits.push(push(program, Inst::Jump(0))?);
                patch(program, at);
            }
            exits.into_iter().for_each(|exit| patch(program, exit));
            Ok(())
        }
        Node::Repeat { node, min, max } => {
            for _ in 0..*min {
                emit(node, program)?;
            }
            let Some(max) = max else {
                let at = split(program)?;
                emit(node, program)?;
                push(program, Inst::Jump(at))?;
                patch(program, at);
                return Ok(());
            };
            let mut splits = Vec::new();
            for _ in *min..*max {
                splits.push(split(program)?);
                emit(node, program)?;
            }
            splits.into_iter().for_each(|at| patch(program, at));
            Ok(())
        }
    }
}

struct Parser {
    chars: Vec<char>,
    pos: usize,
    nesting: u32,
}

impl Parser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        let hit = self.peek() == Some(c);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn error(&self, what: &str) -> Unsupported {
        Unsupported(format!("{what} at offset {}", self.pos))
    }

    fn alternation(&mut self) -> Result<Node, Unsupported> {
        let mut alternatives = vec![self.concat()?];
        while self.eat('|') {
            alternatives.push(self.concat()?);
        }
        Ok(match alternatives.len() {
            1 => alternatives.remove(0),
            _ => Node::Alt(alternatives),
        })
    }

    fn concat(&mut self) -> Result<Node, Unsupported> {
        let mut items = Vec::new();
        while let Some(c) = self.peek() {
            if c == '|' || c == ')' {
                break;
            }
            let atom = self.atom()?;
            items.push(self.quantified(atom)?);
        }
        Ok(Node::Concat(items))
    }

    fn atom(&mut self) -> Result<Node, Unsupported> {
        let Some(c) = self.next() else {
            return Err(self.error("unexpected end"));
        };
        match c {
            '(' => self.group(),
            '[' => self.class(),
            '.' => Ok(Node::Char(Single::Any)),
            '^' => Ok(Node::Start),
            '$' => Ok(Node::End),
            '\\' => self.escape(),
            '*' | '+' | '?' => Err(self.error("missing argument to repetition operator")),
            // A `{` that does not start a valid repeat count is a literal in Go, like here.
            c => Ok(Node::Char(Single::Literal(c))),
        }
    }

    fn group(&mut self) -> Result<Node, Unsupported> {
        if self.eat('?') && !self.eat(':') {
            return Err(self.error("unsupported group flags"));
        }
        self.nesting += 1;
        if self.nesting > MAX_GROUP_NESTING {
            return Err(self.error("groups nested too deeply"));
        }
        let inner = self.alternation()?;
        self.nesting -= 1;
        if !self.eat(')') {
            return Err(self.error("missing closing )"));
        }
        Ok(inner)
    }

    fn escape(&mut self) -> Result<Node, Unsupported> {
        let Some(c) = self.next() else {
            return Err(self.error("trailing backslash"));
        };
        if let Some(item) = Perl::from_escape(c) {
            return Ok(Node::Char(Single::Class(Class {
                negated: false,
                items: vec![item],
            })));
        }
        match c {
            'A' => Ok(Node::Start),
            'z' => Ok(Node::End),
            c => self.escaped_char(c).map(|c| Node::Char(Single::Literal(c))),
        }
    }

    fn escaped_char(&self, c: char) -> Result<char, Unsupported> {
        match c {
            'n' => Ok('\n'),
            't' => Ok('\t'),
            'r' => Ok('\r'),
            'f' => Ok('\x0C'),
            'v' => Ok('\x0B'),
            'a' => Ok('\x07'),
            c if c.is_ascii_punctuation() => Ok(c),
            c => Err(self.error(&format!("unsupported escape \\{c}"))),
        }
    }

    fn class(&mut self) -> Result<Node, Unsupported> {
        let negated = self.eat('^');
        let mut items = Vec::new();
        let mut first = true;
        loop {
            let Some(c) = self.next() else {
                return Err(self.error("missing closing ]"));
            };
            // `]` right after `[` or `[^` is a literal, as in Go.
            if c == ']' && !first {
                break;
            }
            first = false;
            if c == '[' && self.peek() == Some(':') {
                return Err(self.error("POSIX character classes are not supported"));
            }
            let lo = if c == '\\' {
                let Some(e) = self.next() else {
                    return Err(self.error("trailing backslash"));
                };
                if let Some(item) = Perl::from_escape(e) {
                    items.push(item);
                    continue;
                }
                self.escaped_char(e)?
            } else {
                c
            };
            items.push(self.range_from(lo)?);
        }
        Ok(Node::Char(Single::Class(Class { negated, items })))
    }

    /// `lo-hi` when a `-` follows that does not end the class, else the single character `lo`.
    fn range_from(&mut self, lo: char) -> Result<Item, Unsupported> {
        if self.peek() != Some('-') || matches!(self.peek_at(1), None | Some(']')) {
            return Ok(Item::Range(lo, lo));
        }
        self.pos += 1;
        let hi = match self.next() {
            Some('\\') => match self.next() {
                Some(e) => self.escaped_char(e)?,
                None => return Err(self.error("trailing backslash")),
            },
            Some(c) => c,
            None => return Err(self.error("missing closing ]")),
        };
        if hi < lo {
            return Err(self.error("invalid character class range"));
        }
        Ok(Item::Range(lo, hi))
    }

    fn quantified(&mut self, atom: Node) -> Result<Node, Unsupported> {
        let (min, max) = match self.peek() {
            Some('*') => (0, None),
            Some('+') => (1, None),
            Some('?') => (0, Some(1)),
            Some('{') => match self.counted()? {
                Some(bounds) => bounds,
                None => return Ok(atom),
            },
            _ => return Ok(atom),
        };
        // Past the operator, or past the closing `}` of a count.
        self.pos += 1;
        // A lazy repeat accepts exactly the same texts for a yes/no answer.
        self.eat('?');
        let save = self.pos;
        if matches!(self.peek(), Some('*' | '+' | '?')) || self.counted()?.is_some() {
            return Err(self.error("invalid nested repetition operator"));
        }
        self.pos = save;
        Ok(Node::Repeat {
            node: Box::new(atom),
            min,
            max,
        })
    }

    /// Parses `{m}`, `{m,}` or `{m,n}` at the cursor, leaving the cursor on its closing `}`;
    /// `None` (cursor unchanged) when the text there is not a repeat count.
    fn counted(&mut self) -> Result<Option<(u32, Option<u32>)>, Unsupported> {
        let start = self.pos;
        let bounds = self.counted_inner();
        if bounds.is_none() {
            self.pos = start;
        }
        match bounds {
            Some((min, max))
                if min > MAX_REPEAT || max.is_some_and(|m| m > MAX_REPEAT || m < min) =>
            {
                Err(self.error("invalid repeat count"))
            }
            other => Ok(other),
        }
    }

    fn counted_inner(&mut self) -> Option<(u32, Option<u32>)> {
        if !self.eat('{') {
            return None;
        }
        let min = self.number()?;
        let max = if self.eat(',') {
            match self.peek() {
                Some('}') => None,
                _ => Some(self.number()?),
            }
        } else {
            Some(min)
        };
        (self.peek() == Some('}')).then_some((min, max))
    }

    fn number(&mut self) -> Option<u32> {
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits: String = self.chars.get(start..self.pos)?.iter().collect();
        // Anything too long to parse is far above MAX_REPEAT anyway.
        digits
            .parse()
            .ok()
            .or((!digits.is_empty()).then_some(u32::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, text: &str) -> bool {
        Pattern::parse(pattern)
            .unwrap_or_else(|e| panic!("{pattern}: {e}"))
            .is_match(text)
    }

    /// AWS-RunShellScript's `executionTimeout` pattern: 1..=172800, unanchored as in Go.
    const EXECUTION_TIMEOUT: &str =
        "([1-9][0-9]{0,4})|(1[0-6][0-9]{4})|(17[0-1][0-9]{3})|(172[0-7][0-9]{2})|(172800)";

    #[test]
    fn execution_timeout_pattern_behaves_like_go() {
        for ok in ["1", "3600", "99999", "172800", "abc7", "0 5"] {
            assert!(matches(EXECUTION_TIMEOUT, ok), "{ok}");
        }
        for bad in ["", "0", "abc", "-", "0000"] {
            assert!(!matches(EXECUTION_TIMEOUT, bad), "{bad}");
        }
        let anchored = format!("^({EXECUTION_TIMEOUT})$");
        for ok in [
            "1", "99999", "100000", "169999", "171999", "172799", "172800",
        ] {
            assert!(matches(&anchored, ok), "{ok}");
        }
        for bad in ["172801", "180000", "0", "01", "1000000", "3600 "] {
            assert!(!matches(&anchored, bad), "{bad}");
        }
    }

    #[test]
    fn anchors_classes_and_escapes() {
        assert!(matches(r"^[^\s]*$", "/var/tmp/x"));
        assert!(matches(r"^[^\s]*$", ""));
        assert!(!matches(r"^[^\s]*$", "/var/tmp x"));
        assert!(!matches(r"^\S+$", "a\tb"));
        assert!(matches(r"^[a-zA-Z0-9_\-./]+$", "my-dir/sub_1.d"));
        assert!(!matches(r"^[a-zA-Z0-9_\-./]+$", "a;b"));
        assert!(matches(r"^\d{3}-\d{4}$", "555-1234"));
        assert!(!matches(r"^\d{3}-\d{4}$", "555-12345"));
        assert!(matches(r"^\w+$", "abc_09"));
        assert!(!matches(r"^\w+$", "ab c"));
        assert!(matches(r"^[]a]+$", "a]a"));
        assert!(matches(r"^[-a]+$", "-a"));
        assert!(matches(r"^[a-]+$", "a-"));
        assert!(matches(r"\.", "a.b"));
        assert!(!matches(r"\.", "ab"));
        assert!(matches(r"\Aab\z", "ab"));
        // `$` is the end of the text only; `.` does not cross a newline, `[^x]` does.
        assert!(!matches("^a$", "a\n"));
        assert!(!matches("^a.b$", "a\nb"));
        assert!(matches("^a[^x]b$", "a\nb"));
    }

    #[test]
    fn groups_alternation_and_repeats() {
        assert!(matches("^(?:ab|cd)+$", "abcdab"));
        assert!(!matches("^(?:ab|cd)+$", "abc"));
        assert!(matches("^(a|)b$", "b"));
        assert!(matches("^(a*)*$", "aaa"));
        assert!(!matches("^(a*)*$", "aab"));
        assert!(matches("^a{2,}$", "aaaa"));
        assert!(!matches("^a{2,}$", "a"));
        assert!(matches("^a{1,2}?b$", "aab"));
        assert!(matches("^(ab){2}$", "abab"));
        assert!(!matches("^(ab){2}$", "ababab"));
        assert!(matches("^x(ab){0,2}y$", "xy"));
        // A `{` that is not a repeat count is a literal.
        assert!(matches("^a{,2}$", "a{,2}"));
        assert!(matches(
            r"\{\{\s*ssm:[\w/-]+\s*\}\}",
            "x {{ ssm:/a/b-c }} y"
        ));
    }

    #[test]
    fn unsupported_syntax_is_reported_not_guessed() {
        for pattern in [
            "(?i)abc",
            r"\bword\b",
            r"\p{L}",
            r"\x41",
            "[[:alpha:]]",
            "a**",
            "*a",
            "(ab",
            "ab)",
            "[ab",
            "a{2,1}",
            "a{1001}",
            r"[z-a]",
            "\\",
        ] {
            assert!(Pattern::parse(pattern).is_err(), "{pattern}");
        }
    }

    #[test]
    fn pathological_patterns_and_long_values_stay_linear() {
        // Exponential for a backtracker; immediate here.
        let text = format!("{}x", "a".repeat(5000));
        assert!(!matches("^(a|a)*(b|b)*(c|c)*$", &text));
        assert!(!matches("^(a*)*$", &text));
        // Long values, group repeats over many iterations: no recursion per character.
        let long = "a".repeat(200_000);
        assert!(matches(r"^[^\s]*$", &long));
        assert!(matches("^(ab|a)*$", &long));
        assert!(matches("^(?:[a-z]+,)*$", &"ab,".repeat(50_000)));
    }

    #[test]
    fn oversized_programs_are_unsupported() {
        assert!(Pattern::parse("(a{1000}){1000}").is_err());
        assert!(Pattern::parse("(a{100}){10}").is_ok());
    }
}
