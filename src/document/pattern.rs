//! Regular expressions as upstream reads them: Go's `regexp` (RE2 syntax, Perl flags), matched
//! by the `regex-lite` crate, which is linear in the text and bounds its automaton's size.
//!
//! The two share most syntax but not every meaning, so a Go pattern is rewritten into
//! `regex-lite` syntax with Go's meaning before it is compiled:
//! - `\s` is `[\t\n\f\r ]` in Go, without the `\v` of `regex-lite`: the Perl classes are written
//!   out (all are ASCII in both, and so is `\b`).
//! - Inside `[...]`, `regex-lite` reads `[` as a nested class and refuses `&&`, `--` and `~~`; Go
//!   reads them as characters: they are escaped.
//! - `\<` and `\>` are word boundaries in `regex-lite` but characters in Go; `\Q…\E` and octal
//!   escapes exist only in Go; a `{` that does not start a repeat count is a character in Go: all
//!   are written as plain characters.
//! - What Go rejects is rejected, with Go's words: escapes it lacks (`\u`, `\e`, …), flags other
//!   than `imsU`, repeat counts above 1000, stacked repetition operators (`a**`), and patterns
//!   whose size by Go's estimate exceeds its limit, which counts empty groups too:
//!   `((((){1000}){1000}){1000}){1000}` is refused before anything is compiled.
//!
//! Where ssm-lite cannot do what Go does, it refuses rather than guess, so a check never passes
//! a value Go would reject: Unicode classes (`\pL`, `\p{Greek}`) are refused, as `regex-lite` has
//! no Unicode tables; `(?i)` folds ASCII letters only, so it may refuse a non-ASCII value Go
//! accepts; and a pattern within Go's limits whose automaton exceeds [`SIZE_LIMIT`] is refused
//! rather than compiled.

use std::fmt;

/// Go's `maxSize`: 128 MiB of 40-byte instructions, as its parser estimates them.
const GO_MAX_SIZE: u64 = (128 << 20) / 40;
/// Go rejects repeat counts above 1000.
const MAX_REPEAT: u32 = 1000;
/// Heap bytes `regex-lite` may spend on one compiled pattern; matching time per character is
/// proportional to it.
const SIZE_LIMIT: usize = 1 << 20;

/// A compiled pattern.
#[derive(Debug)]
pub(crate) struct Pattern {
    regex: regex_lite::Regex,
    /// Go's size estimate: about the automaton's states, so the work of matching one character
    /// is at most proportional to it.
    size: u64,
}

/// Why a pattern cannot be used: Go's words for what Go rejects, ours for what ssm-lite refuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PatternError(String);

impl fmt::Display for PatternError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Pattern {
    /// Compiles a pattern in Go syntax (see the module notes). Compiling takes time in
    /// proportion to the pattern's size by Go's estimate, which is taken from `budget` first;
    /// a pattern larger than what is left is refused.
    pub(crate) fn new(go_source: &str, budget: &mut u64) -> Result<Pattern, PatternError> {
        let (source, size) = Translator::new(go_source).run()?;
        if size > *budget {
            return Err(PatternError(format!(
                "the pattern is too large for ssm-lite to check with what is left of this \
                 command's budget ({budget} automaton steps)"
            )));
        }
        *budget -= size;
        let regex = regex_lite::RegexBuilder::new(&source)
            .size_limit(SIZE_LIMIT)
            .build()
            .map_err(|e| PatternError(refused(&e)))?;
        Ok(Pattern { regex, size })
    }

    /// Go's `MatchString`: true when the pattern matches anywhere in `text`.
    pub(crate) fn is_match(&self, text: &str) -> bool {
        self.regex.is_match(text)
    }

    /// A bound on the work of [`Pattern::is_match`] over `text`, in automaton steps (about 30 ns
    /// each on a 2 GHz x86_64 core, measured; typical patterns take far fewer).
    pub(crate) fn cost(&self, text: &str) -> u64 {
        self.size.saturating_mul(text.len() as u64 + 1)
    }
}

/// What `regex-lite` says when it refuses a translated pattern (its errors are fixed texts).
fn refused(error: &regex_lite::Error) -> String {
    match error.to_string().as_str() {
        "compiled regex exceeded size limit" => format!(
            "the pattern is too large for ssm-lite to check (its automaton would exceed {SIZE_LIMIT} bytes)"
        ),
        other => format!("ssm-lite cannot check this pattern: {other}"),
    }
}

/// Go's `error parsing regexp: <code>: `<expr>``.
fn go_error(code: &str, expr: &str) -> PatternError {
    PatternError(format!("error parsing regexp: {code}: `{expr}`"))
}

/// One open group while translating, with Go's size estimate of what it holds so far
/// (`regexp/syntax` `calcSize`, without its factoring of alternations).
#[derive(Default)]
struct Frame {
    capture: bool,
    /// Sizes of the closed alternatives, and how many `|` closed them.
    alternatives: u64,
    bars: u64,
    /// Size of the alternative being read.
    concat: u64,
    /// Size of its last item, which a repetition operator applies to.
    last: Option<u64>,
    /// Where the last item's repetition operator starts, when it has one (Go rejects `a**`).
    repeated: Option<usize>,
}

impl Frame {
    fn size(&self) -> u64 {
        let open = self.concat.max(1);
        match self.bars {
            0 => open,
            bars => self.alternatives.saturating_add(open).saturating_add(bars),
        }
    }
}

struct Translator<'a> {
    source: &'a str,
    chars: Vec<char>,
    pos: usize,
    out: String,
    frames: Vec<Frame>,
}

impl<'a> Translator<'a> {
    fn new(source: &'a str) -> Translator<'a> {
        Translator {
            source,
            chars: source.chars().collect(),
            pos: 0,
            out: String::with_capacity(source.len() * 2),
            frames: vec![Frame::default()],
        }
    }

    /// The translation and Go's size estimate of the pattern.
    fn run(mut self) -> Result<(String, u64), PatternError> {
        while let Some(c) = self.next() {
            match c {
                '\\' => self.escape()?,
                '[' => self.class()?,
                '(' => self.open()?,
                ')' => self.close()?,
                '|' => self.bar(),
                '*' | '+' | '?' => {
                    let (min, max) = match c {
                        '*' => (0, None),
                        '+' => (1, None),
                        _ => (0, Some(1)),
                    };
                    self.out.push(c);
                    self.repeat(self.pos - 1, min, max)?;
                }
                '{' => match self.repeat_count() {
                    Some((start, min, max)) => {
                        if min > MAX_REPEAT || max.is_some_and(|max| max > MAX_REPEAT || max < min)
                        {
                            return Err(go_error("invalid repeat count", &self.since(start)));
                        }
                        self.out.push_str(&self.since(start));
                        self.repeat(start, min, max)?;
                    }
                    None => self.literal('{'),
                },
                '.' | '^' | '$' => {
                    self.out.push(c);
                    self.atom(1);
                }
                c => self.literal(c),
            }
        }
        if self.frames.len() > 1 {
            return Err(go_error("missing closing )", self.source));
        }
        let size = self.frames[0].size();
        if size > GO_MAX_SIZE {
            return Err(PatternError(
                "error parsing regexp: expression too large".to_owned(),
            ));
        }
        Ok((self.out, size))
    }

    fn next(&mut self) -> Option<char> {
        let c = self.chars.get(self.pos).copied();
        self.pos += usize::from(c.is_some());
        c
    }

    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    /// The source text from `start` to the current position.
    fn since(&self, start: usize) -> String {
        self.chars[start..self.pos].iter().collect()
    }

    fn frame(&mut self) -> &mut Frame {
        self.frames
            .last_mut()
            .expect("the outermost frame is never closed")
    }

    fn atom(&mut self, size: u64) {
        let frame = self.frame();
        frame.concat = frame.concat.saturating_add(size);
        frame.last = Some(size);
        frame.repeated = None;
    }

    fn literal(&mut self, c: char) {
        self.out
            .push_str(&regex_lite::escape(c.encode_utf8(&mut [0; 4])));
        self.atom(1);
    }

    /// Applies the repetition operator at `start` (already written out) to the last item; a
    /// lazy `?` after it is copied along.
    fn repeat(&mut self, start: usize, min: u32, max: Option<u32>) -> Result<(), PatternError> {
        if self.peek(0) == Some('?') {
            self.pos += 1;
            self.out.push('?');
        }
        let frame = self
            .frames
            .last()
            .expect("the outermost frame is never closed");
        let Some(sub) = frame.last else {
            return Err(go_error(
                "missing argument to repetition operator",
                &self.since(start),
            ));
        };
        if let Some(previous) = frame.repeated {
            return Err(go_error(
                "invalid nested repetition operator",
                &self.since(previous),
            ));
        }
        let min = u64::from(min);
        let size = match max.map(u64::from) {
            None if min == 0 => sub.saturating_add(2),
            None => min.saturating_mul(sub).saturating_add(1),
            Some(max) => max.saturating_mul(sub).saturating_add(max - min),
        };
        let frame = self.frame();
        frame.concat = frame.concat.saturating_sub(sub).saturating_add(size);
        frame.last = Some(size);
        frame.repeated = Some(start);
        Ok(())
    }

    /// `{n}`, `{n,}` or `{n,m}` after a `{`: its start and counts. `None` (nothing read) when
    /// the `{` starts no count, as then Go reads it as a character.
    fn repeat_count(&mut self) -> Option<(usize, u32, Option<u32>)> {
        let start = self.pos - 1;
        let counts = self.counts();
        if counts.is_none() {
            self.pos = start + 1;
        }
        counts.map(|(min, max)| (start, min, max))
    }

    fn counts(&mut self) -> Option<(u32, Option<u32>)> {
        let min = self.number()?;
        match self.next()? {
            '}' => return Some((min, Some(min))),
            ',' => {}
            _ => return None,
        }
        if self.peek(0) == Some('}') {
            self.pos += 1;
            return Some((min, None));
        }
        let max = self.number()?;
        (self.next() == Some('}')).then_some((min, Some(max)))
    }

    /// Digits as Go's `parseInt` takes them: no leading zero; too many is an invalid count.
    fn number(&mut self) -> Option<u32> {
        let start = self.pos;
        while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        let digits = self.since(start);
        if digits.is_empty() || (digits.len() > 1 && digits.starts_with('0')) {
            return None;
        }
        Some(digits.parse().unwrap_or(u32::MAX))
    }

    fn open(&mut self) -> Result<(), PatternError> {
        let start = self.pos - 1;
        if self.peek(0) != Some('?') {
            self.out.push('(');
            self.frames.push(Frame {
                capture: true,
                ..Frame::default()
            });
            return Ok(());
        }
        self.pos += 1;
        if self.peek(0) == Some(':') {
            self.pos += 1;
            self.out.push_str("(?:");
            self.frames.push(Frame::default());
            return Ok(());
        }
        let named = match (self.peek(0), self.peek(1)) {
            (Some('P'), Some('<')) => Some(2),
            (Some('<'), _) => Some(1),
            _ => None,
        };
        if let Some(skip) = named {
            self.pos += skip;
            let name_start = self.pos;
            while self
                .peek(0)
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                self.pos += 1;
            }
            let name = self.since(name_start);
            if name.is_empty() || self.next() != Some('>') {
                return Err(go_error("invalid named capture", &self.since(start)));
            }
            self.out.push_str(&format!("(?P<{name}>"));
            self.frames.push(Frame {
                capture: true,
                ..Frame::default()
            });
            return Ok(());
        }
        self.flags(start)
    }

    /// `(?flags)` or `(?flags:…`, flags from `imsU` with at most one `-`, as Go allows.
    fn flags(&mut self, start: usize) -> Result<(), PatternError> {
        let (mut negated, mut flag_after_minus, mut any) = (false, false, false);
        loop {
            match self.next() {
                Some('i' | 'm' | 's' | 'U') => {
                    any = true;
                    flag_after_minus |= negated;
                }
                Some('-') if !negated => negated = true,
                Some(end @ (')' | ':')) if any && (!negated || flag_after_minus) => {
                    self.out.push_str(&self.since(start));
                    if end == ':' {
                        self.frames.push(Frame::default());
                    } else {
                        // Flags are no item: nothing for a repetition to apply to.
                        self.frame().last = None;
                    }
                    return Ok(());
                }
                _ => {
                    return Err(go_error(
                        "invalid or unsupported Perl syntax",
                        &self.since(start),
                    ));
                }
            }
        }
    }

    fn close(&mut self) -> Result<(), PatternError> {
        if self.frames.len() == 1 {
            return Err(go_error("unexpected )", self.source));
        }
        let frame = self.frames.pop().expect("checked above");
        self.out.push(')');
        let size = frame.size();
        self.atom(if frame.capture {
            size.saturating_add(2)
        } else {
            size
        });
        Ok(())
    }

    fn bar(&mut self) {
        self.out.push('|');
        let frame = self.frame();
        frame.alternatives = frame.alternatives.saturating_add(frame.concat.max(1));
        frame.bars += 1;
        frame.concat = 0;
        frame.last = None;
        frame.repeated = None;
    }

    /// After a `\` outside a class.
    fn escape(&mut self) -> Result<(), PatternError> {
        let Some(c) = self.peek(0) else {
            return Err(PatternError(
                "error parsing regexp: trailing backslash at end of expression: ``".to_owned(),
            ));
        };
        if let Some(class) = perl_class(c) {
            self.pos += 1;
            self.out.push_str(&format!("[{class}]"));
        } else if let Some(assertion) = assertion(c) {
            self.pos += 1;
            self.out.push_str(assertion);
        } else if c == 'p' || c == 'P' {
            return Err(unicode_class());
        } else if c == 'Q' {
            self.pos += 1;
            self.quoted();
            return Ok(());
        } else {
            let c = self.escaped_char()?;
            self.out.push_str(&hex(c));
        }
        self.atom(1);
        Ok(())
    }

    /// `\Q…\E`: every character up to `\E` (or the end) is a literal.
    fn quoted(&mut self) {
        while let Some(c) = self.next() {
            if c == '\\' && self.peek(0) == Some('E') {
                self.pos += 1;
                return;
            }
            self.literal(c);
        }
    }

    /// An escape that stands for one character (the `\` already read): octal, hex, the C
    /// escapes, or punctuation. Go rejects every other letter or digit.
    fn escaped_char(&mut self) -> Result<char, PatternError> {
        let start = self.pos - 1;
        let invalid = |t: &Translator| go_error("invalid escape sequence", &t.since(start));
        let c = self.next().ok_or_else(|| invalid(self))?;
        let value = match c {
            '0'..='7' => {
                // `\1`…`\7` alone would be a backreference: Go has none.
                if c != '0' && !self.peek(0).is_some_and(|d| ('0'..='7').contains(&d)) {
                    return Err(invalid(self));
                }
                let mut value = c.to_digit(8).unwrap_or(0);
                for _ in 0..2 {
                    match self.peek(0).and_then(|d| d.to_digit(8)) {
                        Some(d) => {
                            value = value * 8 + d;
                            self.pos += 1;
                        }
                        None => break,
                    }
                }
                value
            }
            'x' => self.hex_escape().ok_or_else(|| invalid(self))?,
            'a' => 0x07,
            'f' => 0x0C,
            't' => 0x09,
            'n' => 0x0A,
            'r' => 0x0D,
            'v' => 0x0B,
            c if c.is_ascii() && !c.is_ascii_alphanumeric() => c as u32,
            _ => return Err(invalid(self)),
        };
        char::from_u32(value).ok_or_else(|| invalid(self))
    }

    /// `\xHH` or `\x{H…}` (the `\x` already read).
    fn hex_escape(&mut self) -> Option<u32> {
        let digits = if self.peek(0) == Some('{') {
            self.pos += 1;
            let start = self.pos;
            while self.peek(0).is_some_and(|c| c.is_ascii_hexdigit()) {
                self.pos += 1;
            }
            let digits = self.since(start);
            (self.next() == Some('}') && !digits.is_empty() && digits.len() <= 8)
                .then_some(digits)?
        } else {
            let start = self.pos;
            for _ in 0..2 {
                self.peek(0).filter(char::is_ascii_hexdigit)?;
                self.pos += 1;
            }
            self.since(start)
        };
        u32::from_str_radix(&digits, 16).ok()
    }

    /// A bracketed class (the `[` already read).
    fn class(&mut self) -> Result<(), PatternError> {
        let start = self.pos - 1;
        self.out.push('[');
        if self.peek(0) == Some('^') {
            self.pos += 1;
            self.out.push('^');
        }
        let mut first = true;
        loop {
            match (self.peek(0), self.peek(1)) {
                (None, _) => return Err(go_error("missing closing ]", &self.since(start))),
                (Some(']'), _) if !first => {
                    self.pos += 1;
                    break;
                }
                (Some('['), Some(':')) if self.posix_class()? => {}
                (Some('\\'), Some(c)) if perl_class(c).is_some() => {
                    self.pos += 2;
                    self.out.push_str(perl_class(c).unwrap_or_default());
                }
                (Some('\\'), Some('p' | 'P')) => return Err(unicode_class()),
                _ => self.class_range()?,
            }
            first = false;
        }
        self.out.push(']');
        self.atom(1);
        Ok(())
    }

    /// `[:name:]` or `[:^name:]` inside a class; false (nothing read) when no `:]` closes it,
    /// as then Go reads the `[` as a character.
    fn posix_class(&mut self) -> Result<bool, PatternError> {
        let rest = &self.chars[self.pos + 2..];
        let Some(end) = rest.windows(2).position(|w| w == [':', ']']) else {
            return Ok(false);
        };
        let name: String = rest[..end].iter().collect();
        let start = self.pos;
        self.pos += end + 4;
        const NAMES: [&str; 14] = [
            "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print",
            "punct", "space", "upper", "word", "xdigit",
        ];
        if !NAMES.contains(&name.trim_start_matches('^')) {
            return Err(go_error(
                "invalid character class range",
                &self.since(start),
            ));
        }
        self.out.push_str(&format!("[:{name}:]"));
        Ok(true)
    }

    /// One class character, or a range `lo-hi` (Go: a `-` before `]` is a character).
    fn class_range(&mut self) -> Result<(), PatternError> {
        let start = self.pos;
        let lo = self.class_char()?;
        if self.peek(0) == Some('-') && self.peek(1).is_some_and(|c| c != ']') {
            self.pos += 1;
            let hi = self.class_char()?;
            if hi < lo {
                return Err(go_error(
                    "invalid character class range",
                    &self.since(start),
                ));
            }
            self.out
                .push_str(&format!("{}-{}", class_text(lo), class_text(hi)));
        } else {
            self.out.push_str(&class_text(lo));
        }
        Ok(())
    }

    fn class_char(&mut self) -> Result<char, PatternError> {
        match self.next() {
            Some('\\') => self.escaped_char(),
            Some(c) => Ok(c),
            None => Err(go_error("missing closing ]", self.source)),
        }
    }
}

/// Go's ASCII Perl classes as the inside of a bracketed class (`regex-lite` has no nested
/// classes, so the negations are written as ranges).
fn perl_class(c: char) -> Option<&'static str> {
    Some(match c {
        'd' => "0-9",
        'D' => r"\x{0}-/:-\x{10FFFF}",
        's' => r"\t\n\x0C\r ",
        'S' => r"\x{0}-\x{8}\x{B}\x{E}-\x{1F}!-\x{10FFFF}",
        'w' => "0-9A-Za-z_",
        'W' => r"\x{0}-/:-@\[-\^`\{-\x{10FFFF}",
        _ => return None,
    })
}

/// `\pL`, `\p{Greek}`, `\PL`: Go's Unicode classes, which `regex-lite` lacks.
fn unicode_class() -> PatternError {
    PatternError(
        "ssm-lite cannot check Unicode classes such as \\pL or \\p{Greek} yet; \
         use explicit ranges such as [a-zA-Z\\x{C0}-\\x{24F}]"
            .to_owned(),
    )
}

/// Go's zero-width escapes; word boundaries are ASCII ones in both.
fn assertion(c: char) -> Option<&'static str> {
    Some(match c {
        'b' => r"\b",
        'B' => r"\B",
        'A' => r"\A",
        'z' => r"\z",
        _ => return None,
    })
}

/// A character inside a class, as `regex-lite` reads it literally. (An escape such as `\x{61}`
/// would do, but under `(?i)` `regex-lite` refuses it as a range end.)
fn class_text(c: char) -> String {
    match c {
        '\\' | '[' | ']' | '-' | '^' | '&' | '~' => format!("\\{c}"),
        c => c.to_string(),
    }
}

fn hex(c: char) -> String {
    format!("\\x{{{:X}}}", c as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unbounded(pattern: &str) -> Result<Pattern, PatternError> {
        Pattern::new(pattern, &mut u64::MAX.clone())
    }

    fn matches(pattern: &str, text: &str) -> bool {
        unbounded(pattern)
            .unwrap_or_else(|e| panic!("{pattern}: {e}"))
            .is_match(text)
    }

    fn error(pattern: &str) -> String {
        unbounded(pattern)
            .err()
            .unwrap_or_else(|| panic!("{pattern} compiled"))
            .0
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
        assert!(matches(r"^\x41\x{263a}\101\0$", "A\u{263a}A\0"));
        assert!(matches(r"^\Qa.b*\E+$", "a.b*"));
        assert!(!matches(r"^\Qa.b*\E$", "axbb"));
        // `$` is the end of the text only; `.` does not cross a newline, `[^x]` does.
        assert!(!matches("^a$", "a\n"));
        assert!(!matches("^a.b$", "a\nb"));
        assert!(matches("^a[^x]b$", "a\nb"));
    }

    #[test]
    fn go_syntax_that_was_skipped_is_enforced() {
        assert!(matches("(?i)^abc$", "AbC"));
        assert!(!matches("(?i)^abc$", "abd"));
        assert!(matches(r"^\bword\b", "word here"));
        assert!(!matches(r"\bword\b", "swordfish"));
        assert!(matches("^[[:alnum:]]+$", "abc123"));
        assert!(!matches("^[[:alnum:]]+$", "x; touch /tmp/pwned"));
        assert!(matches("^[[:^digit:]]+$", "abc"));
        assert!(matches("^(?P<x>a)(?<y>b)$", "ab"));
        assert!(matches("^(?s:a.b)$", "a\nb"));
        assert!(matches("(?m)^b$", "a\nb\nc"));
    }

    #[test]
    fn meanings_follow_go_where_regex_differs() {
        // Perl classes and word boundaries are ASCII in Go.
        assert!(!matches(r"^\w+$", "é"));
        assert!(!matches(r"^\d$", "٣"));
        assert!(!matches(r"^\s$", "\u{85}"));
        assert!(!matches(r"^\s$", "\x0B"));
        assert!(matches(r"^\W$", "é"));
        assert!(!matches(r"é\b", "é"));
        assert!(matches(r"a\bé", "aé"));
        assert!(matches(r"^[\w-]+$", "a-b_c"));
        assert!(matches(r"^[^\d\s]+$", "é"));
        assert!(matches(r"^[\W\d]+$", "é;1"));
        assert!(!matches(r"^[\W\d]+$", "a"));
        assert!(matches(r"^[\S]+$", "\x0B"));
        assert!(!matches(r"^\D$", "5"));
        assert!(matches(r"^\D+$", "/:\u{10FFFF}"));
        // In a class, `[`, `&&`, `--`, `~~` are characters.
        assert!(matches("^[a&&b]+$", "a&b"));
        assert!(matches("^[a~~]+$", "a~"));
        assert!(matches("^[!--]+$", "!-,"));
        assert!(matches("^[[a]+$", "[a"));
        assert!(matches(r"(?i)^[a-c\x{64}\-]+$", "aBd-"));
        assert!(matches("^[\\^\\]]+$", "^]"));
        // `\<`, `\>` are characters; a `{` that is not a count is one too.
        assert!(matches(r"^\<a\>$", "<a>"));
        assert!(matches("^a{,2}$", "a{,2}"));
        assert!(matches("^a{x}$", "a{x}"));
        assert!(matches("^a{01}$", "a{01}"));
        assert!(matches("^{}$", "{}"));
        assert!(matches(r"^[\.\-\]]+$", ".-]"));
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
        assert!(matches(
            r"\{\{\s*ssm:[\w/-]+\s*\}\}",
            "x {{ ssm:/a/b-c }} y"
        ));
    }

    #[test]
    fn what_go_rejects_is_rejected_with_gos_words() {
        for (pattern, expected) in [
            ("a**", "invalid nested repetition operator: `**`"),
            ("a*?+", "invalid nested repetition operator: `*?+`"),
            ("a{2}{3}", "invalid nested repetition operator: `{2}{3}`"),
            ("*a", "missing argument to repetition operator: `*`"),
            ("(?i)*", "missing argument to repetition operator: `*`"),
            ("a|+", "missing argument to repetition operator: `+`"),
            ("(ab", "missing closing ): `(ab`"),
            ("ab)", "unexpected ): `ab)`"),
            ("[ab", "missing closing ]: `[ab`"),
            ("a{2,1}", "invalid repeat count: `{2,1}`"),
            ("a{1001}", "invalid repeat count: `{1001}`"),
            ("a{99999999999}", "invalid repeat count: `{99999999999}`"),
            ("[z-a]", "invalid character class range: `z-a`"),
            ("[[:foo:]]", "invalid character class range: `[:foo:]`"),
            (r"\u0041", r"invalid escape sequence: `\u`"),
            (r"\1", r"invalid escape sequence: `\1`"),
            (r"\8", r"invalid escape sequence: `\8`"),
            (r"[\b]", r"invalid escape sequence: `\b`"),
            (r"\x4", r"invalid escape sequence: `\x4`"),
            ("(?x)a", "invalid or unsupported Perl syntax: `(?x`"),
            ("(?i-)a", "invalid or unsupported Perl syntax: `(?i-)`"),
            ("(?P=n)", "invalid or unsupported Perl syntax: `(?P`"),
        ] {
            assert_eq!(
                error(pattern),
                format!("error parsing regexp: {expected}"),
                "{pattern}"
            );
        }
        assert_eq!(
            error("\\"),
            "error parsing regexp: trailing backslash at end of expression: ``"
        );
    }

    #[test]
    fn patterns_too_large_for_go_or_for_us_are_refused() {
        // Go's estimate: ((){1000}) is 3,002; two levels 3,002,002; three are over its limit.
        assert_eq!(
            error("((((){1000}){1000}){1000}){1000}"),
            "error parsing regexp: expression too large"
        );
        // Within Go's limit, but regex-lite does not shrink empty groups: refused, not compiled.
        assert!(error("((){1000}){1000}").starts_with("the pattern is too large for ssm-lite"));
        assert_eq!(
            error("(a{1000}){1000}"),
            "the pattern is too large for ssm-lite to check (its automaton would exceed 1048576 bytes)"
        );
        assert!(unbounded("(a{100}){10}").is_ok());
        assert!(unbounded("^[a-zA-Z0-9._/-]{1,1000}$").is_ok());
        // Go's estimate of the last one is 2,001.
        let mut budget = 2_001;
        assert!(Pattern::new("^[a-zA-Z0-9._/-]{1,1000}$", &mut budget).is_ok());
        assert_eq!(budget, 0);
        assert!(
            Pattern::new("^[a-zA-Z0-9._/-]{1,1000}$", &mut 2_000)
                .unwrap_err()
                .0
                .starts_with("the pattern is too large for ssm-lite to check with what is left")
        );
    }

    #[test]
    fn what_ssm_lite_cannot_check_is_refused_not_guessed() {
        for pattern in [r"^\pL+$", r"^\p{Greek}", r"[\PL]", r"\p"] {
            assert!(error(pattern).starts_with("ssm-lite cannot check Unicode classes"));
        }
        // ASCII case folding only: stricter than Go, never looser.
        assert!(matches("(?i)^straße$", "STRAßE"));
        assert!(!matches("(?i)^é$", "É"));
    }

    #[test]
    fn pathological_patterns_and_long_values_stay_linear() {
        // Exponential for a backtracker; immediate here.
        let text = format!("{}x", "a".repeat(5000));
        assert!(!matches("^(a|a)*(b|b)*(c|c)*$", &text));
        assert!(!matches("^(a*)*$", &text));
        let long = "a".repeat(200_000);
        assert!(matches(r"^[^\s]*$", &long));
        assert!(matches("^(ab|a)*$", &long));
        assert!(matches("^(?:[a-z]+,)*$", &"ab,".repeat(50_000)));
    }
}
