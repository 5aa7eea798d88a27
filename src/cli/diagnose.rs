//! `ssm-lite diagnose`: the report of `ssm_lite::diagnose` as a table for a person, or as
//! upstream `ssm-cli get-diagnostics`' JSON (`{"DiagnosticsOutput": [{Check, Status, Note}]}`).

use super::DiagnoseArgs;
use serde_json::json;
use ssm_lite::diagnose::{self, Check, Status};

/// The table's width: the note column wraps to fit it.
const TABLE_WIDTH: usize = 100;
/// The note column is never narrower than this, whatever the check names' length.
const MIN_NOTE_WIDTH: usize = 40;

/// Runs the checks and prints the report; the exit code (1 when any check failed).
pub fn diagnose(args: &DiagnoseArgs) -> u8 {
    let checks = diagnose::run(args.config.as_deref(), &args.state_dir);
    if args.json {
        println!("{}", json_report(&checks));
    } else {
        print!("{}", table(&checks));
    }
    u8::from(checks.iter().any(|c| c.status == Status::Failed))
}

fn json_report(checks: &[Check]) -> String {
    let rows: Vec<_> = checks
        .iter()
        .map(|c| json!({"Check": c.check, "Status": c.status.to_string(), "Note": c.note}))
        .collect();
    serde_json::to_string_pretty(&json!({ "DiagnosticsOutput": rows })).unwrap_or_default()
}

/// Aligned columns `Check  Status   Note`, each note wrapped at word boundaries.
fn table(checks: &[Check]) -> String {
    let check_width = checks
        .iter()
        .map(|c| c.check.len())
        .max()
        .unwrap_or(0)
        .max(5);
    let status_width = "Success".len();
    let note_width = TABLE_WIDTH
        .saturating_sub(check_width + status_width + 4)
        .max(MIN_NOTE_WIDTH);
    let mut out = String::new();
    let mut row = |check: &str, status: &str, note: &str| {
        for (i, line) in wrap(note, note_width).iter().enumerate() {
            let (check, status) = if i == 0 { (check, status) } else { ("", "") };
            let line = format!("{check:check_width$}  {status:status_width$}  {line}");
            out.push_str(line.trim_end());
            out.push('\n');
        }
    };
    row("Check", "Status", "Note");
    row(
        &"-".repeat(check_width),
        &"-".repeat(status_width),
        &"-".repeat(note_width),
    );
    for c in checks {
        row(&c.check, &c.status.to_string(), &c.note);
    }
    out
}

/// `text` in lines of at most `width` characters, broken at spaces (a longer word keeps a line
/// of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("never empty");
        if line.is_empty() {
            line.push_str(word);
        } else if line.chars().count() + 1 + word.chars().count() <= width {
            line.push(' ');
            line.push_str(word);
        } else {
            lines.push(word.to_owned());
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, status: Status, note: &str) -> Check {
        Check {
            check: name.into(),
            status,
            note: note.into(),
        }
    }

    #[test]
    fn the_table_aligns_columns_and_wraps_notes() {
        let long = "word ".repeat(30);
        let text = table(&[
            check("EC2 IMDS", Status::Success, "IMDS is accessible"),
            check("Clock skew", Status::Failed, long.trim()),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Check       Status   Note");
        assert!(lines[1].starts_with("----------  -------  ----"), "{text}");
        assert_eq!(lines[2], "EC2 IMDS    Success  IMDS is accessible");
        assert!(
            lines[3].starts_with("Clock skew  Failed   word word"),
            "{text}"
        );
        assert!(lines[4].starts_with("                     word"), "{text}");
        assert!(lines.iter().all(|l| l.len() <= TABLE_WIDTH), "{text}");
        let words: usize = lines[3..].iter().map(|l| l.matches("word").count()).sum();
        assert_eq!(words, 30, "no word lost: {text}");
    }

    #[test]
    fn json_has_upstreams_shape() {
        let out = json_report(&[check("AWS Credentials", Status::Skipped, "n")]);
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            value,
            json!({"DiagnosticsOutput": [{"Check": "AWS Credentials", "Status": "Skipped", "Note": "n"}]})
        );
    }

    #[test]
    fn a_word_longer_than_the_width_keeps_its_own_line() {
        assert_eq!(wrap("a bbbbbb c", 3), ["a", "bbbbbb", "c"]);
        assert_eq!(wrap("", 3), [""]);
    }
}
