//! Association schedules: an association's `ScheduleExpression`, `rate(…)` or `cron(…)`, parsed
//! and evaluated in UTC the way amazon-ssm-agent does (`scheduleexpression`, `rateexpr` and the
//! `gorhill/cronexpr` it vendors), with the same refusal texts.
//!
//! `cron(…)` takes 5, 6 or 7 fields as cronexpr does: `Minutes Hours Day-of-month Month
//! Day-of-week`, then `Year` (the 6 fields State Manager sends), or `Seconds` first and `Year`
//! last (the agent's own `cron(0 0/5 * 1/1 * ? *)`); fields past the 7th are ignored. Day-of-week
//! numbers are AWS's, 1 (Sunday) to 7 (Saturday), as the State Manager documentation and console
//! give them: `2#1` is the first Monday, `6L` the last Friday. Upstream hands them to cronexpr,
//! which counts 0 (Sunday) to 6 and so runs such an association a day late; names (`SUN`–`SAT`,
//! `JAN`–`DEC`) mean the same to both. Years run 1970–2099. Where cronexpr would panic, never
//! fire or misread (a field that selects nothing, `01` as a month), this refuses or reads what
//! was written.

use crate::timefmt::{civil_from_days, days_from_civil};

/// A parsed `ScheduleExpression`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    /// No expression: the association runs once.
    Once,
    /// `rate(N minutes|hours|days)`, in seconds.
    Rate(u64),
    /// `cron(…)`.
    Cron(Cron),
}

/// A parsed cron expression: each field's values as bits (bit `v` for value `v`; a year's bit
/// counts from 1970). The day fields keep their special forms apart because which days they
/// select depends on the month.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u64,
    months: u64,
    years: [u64; 3],
    /// Day-of-month is not `*`/`?`: its forms below select days.
    dom_restricted: bool,
    dom: u64,
    /// `15W`: the weekday nearest the 15th, within the month.
    workdays: u64,
    /// `L`.
    last_day: bool,
    /// `LW`.
    last_workday: bool,
    /// Day-of-week is not `*`/`?`: its forms below select days.
    dow_restricted: bool,
    /// Bit 0 = Sunday.
    dow: u64,
    /// `5#3`, the third Friday: bit (3 - 1) * 7 + 5.
    nth_dow: u64,
    /// `5L`, the last Friday: bit 5.
    last_dow: u64,
}

/// Why an expression was refused; Display gives upstream's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleError(pub String);

impl std::fmt::Display for ScheduleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Schedule {
    /// Parses an association's `ScheduleExpression` ("" or absent: `Once`).
    pub fn parse(expression: &str) -> Result<Schedule, ScheduleError> {
        if expression.is_empty() {
            return Ok(Schedule::Once);
        }
        let lower = expression.to_ascii_lowercase();
        if lower.starts_with("cron") {
            // Upstream's validateCronExpression: the whole text is `cron(…)`, on one line.
            if !lower.starts_with("cron(") || !lower.ends_with(')') || lower.contains('\n') {
                return Err(ScheduleError(format!(
                    "Cron expression {expression} is invalid."
                )));
            }
            let inner = &expression[5..expression.len() - 1];
            return Cron::parse(inner).map(Schedule::Cron).map_err(|why| {
                ScheduleError(format!(
                    "Error {why} received while parsing cron expression {expression}"
                ))
            });
        }
        if lower.starts_with("rate") {
            return parse_rate(&lower).map(Schedule::Rate).map_err(|why| {
                ScheduleError(format!(
                    "An error {why} received while parsing rate expression {expression}"
                ))
            });
        }
        Err(ScheduleError(format!(
            "Unknown expression type detected in expression {expression}"
        )))
    }

    /// The first time (unix seconds, UTC) strictly after `after` at which the schedule fires;
    /// `None` for `Once` and for a cron expression that never fires again.
    pub fn next_after(&self, after: u64) -> Option<u64> {
        match self {
            Schedule::Once => None,
            Schedule::Rate(secs) => after.checked_add(*secs),
            Schedule::Cron(cron) => cron.next_after(after),
        }
    }
}

/// rateexpr's `(?i)rate\((\d+)\s*(minute|minutes|hour|hours|day|days)\)`, matching the whole
/// (lower-cased) text; the interval in seconds. Singular and plural are taken for any count, as
/// upstream does; an interval past `u64` saturates (it then never comes).
fn parse_rate(lower: &str) -> Result<u64, &'static str> {
    const INVALID: &str = "Schedule expression is not a valid rate expression.";
    const NOT_POSITIVE: &str = "Schedule expression is not a valid rate expression. Time value should be a positive number.";
    let body = lower
        .strip_prefix("rate(")
        .and_then(|b| b.strip_suffix(')'))
        .ok_or(INVALID)?;
    let (number, unit) = body.split_at(body.bytes().take_while(u8::is_ascii_digit).count());
    // Go's `\s`: space, \t, \n, \f, \r.
    let unit = unit.trim_start_matches([' ', '\t', '\n', '\x0c', '\r']);
    let unit_secs = match unit {
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3600,
        "day" | "days" => 86_400,
        _ => return Err(INVALID),
    };
    if number.is_empty() {
        return Err(INVALID);
    }
    // Like upstream's ParseInt: past i64 is refused, not wrapped.
    match number.parse::<i64>() {
        Ok(n) if n > 0 => Ok((n as u64).saturating_mul(unit_secs)),
        _ => Err(NOT_POSITIVE),
    }
}

/// One cron field's bounds and names, as cronexpr describes it.
struct Field {
    name: &'static str,
    /// What `*` and `/` span.
    min: u32,
    max: u32,
    /// The largest number written as a value (day-of-week takes 7 for Sunday).
    top: u32,
    /// Full names from `min` on; their first three letters name them too.
    names: &'static [&'static str],
}

const SECOND: Field = Field::numeric("second", 0, 59);
const MINUTE: Field = Field::numeric("minute", 0, 59);
const HOUR: Field = Field::numeric("hour", 0, 23);
const DOM: Field = Field::numeric("day-of-month", 1, 31);
const YEAR: Field = Field::numeric("year", 1970, 2099);
const MONTH: Field = Field {
    names: &[
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ],
    ..Field::numeric("month", 1, 12)
};
const DOW: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 6,
    top: 6,
    names: &[
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ],
};

/// One comma-separated entry of a field, when it is one of the forms every field takes.
enum Entry {
    /// `*` or `?`.
    All,
    One(u32),
    /// `a-b`, `a/step` (to the field's max), `*/step`, `a-b/step`.
    Span(u32, u32, u32),
}

impl Field {
    const fn numeric(name: &'static str, min: u32, max: u32) -> Field {
        Field {
            name,
            min,
            max,
            top: max,
            names: &[],
        }
    }

    /// A lower-cased value: a name, or the digits cronexpr's value pattern takes (one or two,
    /// four for a year). cronexpr reads a month or weekday with a leading zero (`01`) as 0;
    /// here it is the number it says.
    fn value(&self, s: &str) -> Option<u32> {
        if let Some(i) = self.names.iter().position(|n| s == *n || s == &n[..3]) {
            return Some(self.min + i as u32);
        }
        let width = if self.min == YEAR.min { 4..=4 } else { 1..=2 };
        if !width.contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let v: u32 = s.parse().ok()?;
        if self.name == DOW.name {
            // AWS numbers days 1 (Sunday) to 7 (Saturday); bits count from 0 = Sunday.
            return (1..=7).contains(&v).then(|| v - 1);
        }
        (self.min..=self.top).contains(&v).then_some(v)
    }

    fn range(&self, s: &str) -> Option<(u32, u32)> {
        let (a, b) = s.split_once('-')?;
        Some((self.value(a)?, self.value(b)?))
    }

    /// A lower-cased entry; `Ok(None)` for what only a day field may know (`L`, `W`, `#`).
    fn entry(&self, s: &str) -> Result<Option<Entry>, String> {
        if s == "*" || s == "?" {
            return Ok(Some(Entry::All));
        }
        let Some((lhs, step)) = s.split_once('/') else {
            if let Some(v) = self.value(s) {
                return Ok(Some(Entry::One(v)));
            }
            return Ok(self.range(s).map(|(a, b)| Entry::Span(a, b, 1)));
        };
        if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(None);
        }
        let (first, last) = match (lhs, self.value(lhs)) {
            ("*", _) => (self.min, self.max),
            (_, Some(v)) => (v, self.max),
            _ => match self.range(lhs) {
                Some(span) => span,
                None => return Ok(None),
            },
        };
        let step = step_value(step);
        if step < 1 || step > self.max {
            return Err(format!("invalid interval {s}"));
        }
        Ok(Some(Entry::Span(first, last, step)))
    }

    /// The field's entries (empty ones skipped, as cronexpr's `[^,]+` does), each with its text
    /// as written; interval errors come first, in order, as in cronexpr.
    fn entries<'a>(&self, text: &'a str) -> Result<Vec<(&'a str, Option<Entry>)>, String> {
        let raw: Vec<&str> = text.split(',').filter(|e| !e.is_empty()).collect();
        if raw.is_empty() {
            return Err(format!("{} field: missing directive", self.name));
        }
        raw.into_iter()
            .map(|e| Ok((e, self.entry(&e.to_ascii_lowercase())?)))
            .collect()
    }

    fn syntax_error(&self, entry: &str) -> String {
        format!("syntax error in {} field: '{entry}'", self.name)
    }

    /// A field with no special forms: each value it selects goes to `add`. `*` anywhere gives
    /// every value at once, unchecked entries after it included, as cronexpr does. A field that
    /// selects nothing (only reversed ranges) is refused: cronexpr would take it, then panic or
    /// never fire.
    fn values(&self, text: &str, add: &mut dyn FnMut(u32)) -> Result<(), String> {
        let mut any = false;
        let mut put = |v| {
            any = true;
            add(v)
        };
        for (raw, entry) in self.entries(text)? {
            match entry {
                None => return Err(self.syntax_error(raw)),
                Some(Entry::All) => {
                    (self.min..=self.max).for_each(&mut put);
                    return Ok(());
                }
                Some(Entry::One(v)) => put(v),
                Some(Entry::Span(a, b, step)) => (a..=b).step_by(step as usize).for_each(&mut put),
            }
        }
        if !any {
            return Err(format!("{} field: '{text}' selects no value", self.name));
        }
        Ok(())
    }

    /// [`Field::values`] as bits, for every field but the year.
    fn bits(&self, text: &str) -> Result<u64, String> {
        let mut bits = 0;
        self.values(text, &mut |v| bits |= 1 << v)?;
        Ok(bits)
    }
}

/// cronexpr's `atoi` for a step: 0–59 in one or two digits, or 1970–2099; anything else is 0,
/// which the caller refuses as an invalid interval.
fn step_value(s: &str) -> u32 {
    match (s.len(), s.parse::<u32>()) {
        (1..=2, Ok(v)) if v <= 59 => v,
        (4, Ok(v)) if (1970..=2099).contains(&v) => v,
        _ => 0,
    }
}

/// cronexpr's shorthands, replaced anywhere in the text (7 fields each).
const ALIASES: [(&str, &str); 6] = [
    ("@yearly", "0 0 0 1 1 * *"),
    ("@annually", "0 0 0 1 1 * *"),
    ("@monthly", "0 0 0 1 * * *"),
    ("@weekly", "0 0 0 * * 1 *"),
    ("@daily", "0 0 0 * * * *"),
    ("@hourly", "0 0 * * * * *"),
];

impl Cron {
    /// The text inside `cron(…)`; the error is cronexpr's.
    fn parse(text: &str) -> Result<Cron, String> {
        let mut text = text.to_string();
        for (alias, fields) in ALIASES {
            text = text.replace(alias, fields);
        }
        // Go's `\S+` splits on exactly the ASCII white space this does.
        let mut fields: Vec<&str> = text.split_ascii_whitespace().take(7).collect();
        if fields.len() < 5 {
            return Err("missing field(s)".into());
        }
        let seconds = match fields.len() {
            7 => SECOND.bits(fields.remove(0))?,
            _ => 1,
        };
        let mut cron = Cron {
            seconds,
            minutes: MINUTE.bits(fields[0])?,
            hours: HOUR.bits(fields[1])?,
            ..Cron::default()
        };
        cron.days_of_month(fields[2])?;
        cron.months = MONTH.bits(fields[3])?;
        cron.days_of_week(fields[4])?;
        let years = &mut cron.years;
        let mut add = |y: u32| {
            let i = (y - YEAR.min) as usize;
            years[i / 64] |= 1 << (i % 64);
        };
        match fields.get(5) {
            Some(f) => YEAR.values(f, &mut add)?,
            None => (YEAR.min..=YEAR.max).for_each(add),
        }
        Ok(cron)
    }

    fn has_year(&self, year: i64) -> bool {
        let i = year - i64::from(YEAR.min);
        (0..130).contains(&i) && self.years[i as usize / 64] >> (i % 64) & 1 == 1
    }

    /// Day-of-month: values, ranges, `L`, `LW`, `15W`.
    fn days_of_month(&mut self, text: &str) -> Result<(), String> {
        self.dom_restricted = true;
        for (raw, entry) in DOM.entries(text)? {
            match entry {
                Some(Entry::All) => self.dom_restricted = false,
                Some(Entry::One(v)) => self.dom |= 1 << v,
                Some(Entry::Span(a, b, step)) => (a..=b)
                    .step_by(step as usize)
                    .for_each(|v| self.dom |= 1 << v),
                None => match raw.to_ascii_lowercase().as_str() {
                    "l" => self.last_day = true,
                    "lw" => self.last_workday = true,
                    s => match s.strip_suffix('w').and_then(|v| DOM.value(v)) {
                        Some(v) => self.workdays |= 1 << v,
                        None => return Err(DOM.syntax_error(raw)),
                    },
                },
            }
        }
        Ok(())
    }

    /// Day-of-week: values (1 Sunday to 7 Saturday, as AWS documents them), ranges, `6L`, `6#3`.
    fn days_of_week(&mut self, text: &str) -> Result<(), String> {
        self.dow_restricted = true;
        for (raw, entry) in DOW.entries(text)? {
            match entry {
                Some(Entry::All) => self.dow_restricted = false,
                Some(Entry::One(v)) => self.dow |= 1 << (v % 7),
                Some(Entry::Span(a, b, step)) => (a..=b)
                    .step_by(step as usize)
                    .for_each(|v| self.dow |= 1 << (v % 7)),
                None => {
                    let s = raw.to_ascii_lowercase();
                    if let Some(v) = s.strip_suffix('l').and_then(|v| DOW.value(v)) {
                        self.last_dow |= 1 << (v % 7);
                    } else if let Some((v, n)) = s
                        .split_once('#')
                        .and_then(|(v, n)| Some((DOW.value(v)?, n)))
                        .filter(|(_, n)| matches!(*n, "1" | "2" | "3" | "4" | "5"))
                    {
                        let nth = u32::from(n.as_bytes()[0] - b'1');
                        self.nth_dow |= 1 << (nth * 7 + v % 7);
                    } else {
                        return Err(DOW.syntax_error(raw));
                    }
                }
            }
        }
        Ok(())
    }

    /// The days of `month` in `year` the day fields select, as bits 1–31. As in cronexpr: both
    /// fields `*`/`?` select every day; otherwise each restricted field adds its days (so both
    /// restricted is either one, as in crontab).
    fn days(&self, year: i64, month: u32) -> u64 {
        let first = days_from_civil(year, month, 1);
        let (next_year, next_month) = if month == 12 {
            (year + 1, 1)
        } else {
            (year, month + 1)
        };
        let last = (days_from_civil(next_year, next_month, 1) - first) as u32;
        let month_days = (1u64 << (last + 1)) - 2;
        if !self.dom_restricted && !self.dow_restricted {
            return month_days;
        }
        // 1970-01-01 was a Thursday (4).
        let first_weekday = (first + 4).rem_euclid(7) as u32;
        let weekday = |day: u32| (first_weekday + day - 1) % 7;
        // The first day of the month that falls on `dow`.
        let first_on = |dow: u32| 1 + (dow + 7 - first_weekday) % 7;
        let mut mask = 0u64;
        if self.dom_restricted {
            mask |= self.dom;
            if self.last_day {
                mask |= 1 << last;
            }
            if self.last_workday {
                mask |= 1 << nearest_workday(last, weekday(last), last);
            }
            for d in members(self.workdays, 1).filter(|&d| d <= last) {
                mask |= 1 << nearest_workday(d, weekday(d), last);
            }
        }
        if self.dow_restricted {
            for dow in members(self.dow, 0) {
                (first_on(dow)..=last)
                    .step_by(7)
                    .for_each(|d| mask |= 1 << d);
            }
            for i in members(self.nth_dow, 0) {
                mask |= 1 << (first_on(i % 7) + 7 * (i / 7));
            }
            let week = last - 6;
            for dow in members(self.last_dow, 0) {
                mask |= 1 << (week + (dow + 7 - weekday(week)) % 7);
            }
        }
        mask & month_days
    }

    /// The first matching time strictly after `after`. The search walks the years, so it ends
    /// by 2099 whatever the fields say.
    fn next_after(&self, after: u64) -> Option<u64> {
        let t = after.checked_add(1)?;
        let (day, secs) = ((t / 86_400) as i64, (t % 86_400) as u32);
        let (y0, m0, d0) = civil_from_days(day);
        let from = [secs / 3600, secs / 60 % 60, secs % 60];
        for year in (y0.max(1970)..=2099).filter(|&y| self.has_year(y)) {
            for month in members(self.months, if year == y0 { m0 } else { 1 }) {
                let this_month = year == y0 && month == m0;
                for d in members(self.days(year, month), if this_month { d0 } else { 1 }) {
                    let start = if this_month && d == d0 { from } else { [0; 3] };
                    if let Some(secs) = self.time_of_day(start) {
                        let day = days_from_civil(year, month, d) as u64;
                        return Some(day * 86_400 + u64::from(secs));
                    }
                }
            }
        }
        None
    }

    /// The first matching time of day at or after `from` (hour, minute, second), in seconds.
    fn time_of_day(&self, from: [u32; 3]) -> Option<u32> {
        for h in members(self.hours, from[0]) {
            let same_hour = h == from[0];
            for m in members(self.minutes, if same_hour { from[1] } else { 0 }) {
                let same_minute = same_hour && m == from[1];
                let start = if same_minute { from[2] } else { 0 };
                if let Some(s) = members(self.seconds, start).next() {
                    return Some(h * 3600 + m * 60 + s);
                }
            }
        }
        None
    }
}

/// The set bits of `bits` from bit `from` on, in order.
fn members(bits: u64, from: u32) -> impl Iterator<Item = u32> {
    (from..64).filter(move |&i| bits >> i & 1 == 1)
}

/// cronexpr's `W`: a Saturday moves to the Friday before, a Sunday to the Monday after, but never
/// out of the month (the 1st on a Saturday goes to the 3rd, a last day on a Sunday to the 2nd
/// before it). `weekday`: 0 = Sunday.
fn nearest_workday(day: u32, weekday: u32, last: u32) -> u32 {
    match weekday {
        6 if day > 1 => day - 1,
        6 => day + 2,
        0 if day < last => day + 1,
        0 => day - 2,
        _ => day,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timefmt::{iso8601_ms, parse_iso8601, unix_secs};
    use std::time::{Duration, UNIX_EPOCH};

    fn secs(iso: &str) -> u64 {
        unix_secs(parse_iso8601(iso).unwrap_or_else(|| panic!("bad test time {iso}")))
    }

    fn iso(secs: u64) -> String {
        iso8601_ms(UNIX_EPOCH + Duration::from_secs(secs))
    }

    /// The next fire time of `expression` after `from`, as `YYYY-MM-DDTHH:MM:SS`, or "never".
    fn next(expression: &str, from: &str) -> String {
        let schedule = Schedule::parse(expression).unwrap_or_else(|e| panic!("{expression}: {e}"));
        match schedule.next_after(secs(from)) {
            Some(t) => iso(t)[..19].to_string(),
            None => "never".into(),
        }
    }

    fn refusal(expression: &str) -> String {
        match Schedule::parse(expression) {
            Ok(s) => panic!("{expression} was taken: {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    // 2026-12-03 is a Thursday.
    const THU_NOON: &str = "2026-12-03T12:00:00Z";

    #[test]
    fn aws_documentation_examples() {
        assert_eq!(next("cron(0 10 * * ? *)", THU_NOON), "2026-12-04T10:00:00");
        assert_eq!(next("cron(15 12 * * ? *)", THU_NOON), "2026-12-03T12:15:00");
        assert_eq!(
            next("cron(0 18 ? * MON-FRI *)", THU_NOON),
            "2026-12-03T18:00:00"
        );
        assert_eq!(
            next("cron(0 18 ? * MON-FRI *)", "2026-12-04T18:00:00Z"),
            "2026-12-07T18:00:00"
        );
        assert_eq!(next("cron(0 8 1 * ? *)", THU_NOON), "2027-01-01T08:00:00");
        assert_eq!(
            next("cron(0/15 * * * ? *)", THU_NOON),
            "2026-12-03T12:15:00"
        );
        assert_eq!(
            next("cron(0/15 * * * ? *)", "2026-12-03T12:59:59Z"),
            "2026-12-03T13:00:00"
        );
        assert_eq!(
            next("cron(0/10 * ? * MON-FRI *)", "2026-12-04T23:55:00Z"),
            "2026-12-07T00:00:00"
        );
        // AWS's numbering (1 = Sunday): the first Monday.
        assert_eq!(next("cron(0 9 ? * 2#1 *)", THU_NOON), "2026-12-07T09:00:00");
        assert_eq!(
            next("cron(0 9 ? * MON#1 *)", THU_NOON),
            "2026-12-07T09:00:00"
        );
        assert_eq!(next("cron(0 23 L * ? *)", THU_NOON), "2026-12-31T23:00:00");
        // 6L and FRIL: the last Friday.
        assert_eq!(next("cron(0 0 ? * 6L *)", THU_NOON), "2026-12-25T00:00:00");
        assert_eq!(
            next("cron(0 0 ? * FRIL *)", THU_NOON),
            "2026-12-25T00:00:00"
        );
        assert_eq!(
            next("cron(0 12 15W * ? *)", THU_NOON),
            "2026-12-15T12:00:00"
        );
    }

    #[test]
    fn nearest_weekday_stays_in_the_month() {
        // 2026-08-15 is a Saturday, 2026-11-15 a Sunday, 2027-05-01 a Saturday,
        // 2026-11-01 and 2026-05-31 Sundays.
        assert_eq!(
            next("cron(0 12 15W * ? *)", "2026-08-01T00:00:00Z"),
            "2026-08-14T12:00:00"
        );
        assert_eq!(
            next("cron(0 12 15W * ? *)", "2026-11-01T00:00:00Z"),
            "2026-11-16T12:00:00"
        );
        assert_eq!(
            next("cron(0 0 1W * ? *)", "2027-04-30T00:00:00Z"),
            "2027-05-03T00:00:00"
        );
        assert_eq!(
            next("cron(0 0 1W * ? *)", "2026-10-31T00:00:00Z"),
            "2026-11-02T00:00:00"
        );
        assert_eq!(
            next("cron(0 0 31W * ? *)", "2026-05-01T00:00:00Z"),
            "2026-05-29T00:00:00"
        );
        assert_eq!(
            next("cron(0 0 LW * ? *)", "2026-05-01T00:00:00Z"),
            "2026-05-29T00:00:00"
        );
        assert_eq!(
            next("cron(0 0 LW * ? *)", "2026-12-01T00:00:00Z"),
            "2026-12-31T00:00:00"
        );
        // 31W in a 30-day month selects nothing that month.
        assert_eq!(
            next("cron(0 0 31W * ? *)", "2026-11-01T00:00:00Z"),
            "2026-12-31T00:00:00"
        );
    }

    #[test]
    fn month_ends_and_leap_years() {
        assert_eq!(
            next("cron(0 23 L * ? *)", "2027-02-01T00:00:00Z"),
            "2027-02-28T23:00:00"
        );
        assert_eq!(
            next("cron(0 23 L * ? *)", "2028-02-01T00:00:00Z"),
            "2028-02-29T23:00:00"
        );
        assert_eq!(next("cron(0 0 29 2 ? *)", THU_NOON), "2028-02-29T00:00:00");
        assert_eq!(
            next("cron(0 0 29 FEB ? *)", "2028-02-29T00:00:00Z"),
            "2032-02-29T00:00:00"
        );
        // 2100 is no leap year, but it is past cronexpr's years anyway.
        assert_eq!(next("cron(0 0 29 2 ? *)", "2096-03-01T00:00:00Z"), "never");
        assert_eq!(
            next("cron(0 0 31 * ? *)", "2026-04-01T00:00:00Z"),
            "2026-05-31T00:00:00"
        );
        assert_eq!(next("cron(0 0 30 2 ? *)", THU_NOON), "never");
        assert_eq!(
            next("cron(59 23 31 12 ? *)", THU_NOON),
            "2026-12-31T23:59:00"
        );
        assert_eq!(
            next("cron(59 23 31 12 ? *)", "2026-12-31T23:59:00Z"),
            "2027-12-31T23:59:00"
        );
        // Mondays: March 2027 is the first month after this one with five.
        assert_eq!(
            next("cron(0 0 ? * MON#5 *)", THU_NOON),
            "2027-03-29T00:00:00"
        );
        assert_eq!(
            next("cron(0 0 ? * 1L *)", "2027-02-01T00:00:00Z"),
            "2027-02-28T00:00:00"
        );
    }

    #[test]
    fn year_field() {
        assert_eq!(
            next("cron(0 0 1 1 ? 2030)", THU_NOON),
            "2030-01-01T00:00:00"
        );
        assert_eq!(
            next("cron(0 0 1 1 ? 2030)", "2030-01-01T00:00:00Z"),
            "never"
        );
        assert_eq!(next("cron(0 0 1 1 ? 2020)", THU_NOON), "never");
        assert_eq!(
            next("cron(0 0 1 1 ? 2028-2040/4)", THU_NOON),
            "2028-01-01T00:00:00"
        );
        assert_eq!(
            next("cron(0 0 1 1 ? 2028-2040/4)", "2028-01-01T00:00:00Z"),
            "2032-01-01T00:00:00"
        );
        assert_eq!(next("cron(0 0 1 1 ? *)", "2099-06-01T00:00:00Z"), "never");
        // Without a year field cronexpr's years apply too.
        assert_eq!(next("cron(30 2 * * *)", "2099-12-31T03:00:00Z"), "never");
        assert_eq!(
            Schedule::parse("cron(0 0 * * ? *)")
                .unwrap()
                .next_after(u64::MAX),
            None
        );
    }

    #[test]
    fn field_counts_forms_and_names() {
        // Five fields: no year; seven: seconds first (the agent's own 7-field form).
        assert_eq!(next("cron(30 2 * * *)", THU_NOON), "2026-12-04T02:30:00");
        assert_eq!(
            next("cron(0 0 0/1 * * ? *)", THU_NOON),
            "2026-12-03T13:00:00"
        );
        assert_eq!(
            next("cron(0 0/5 * 1/1 * ? *)", THU_NOON),
            "2026-12-03T12:05:00"
        );
        assert_eq!(
            next("cron(30 0 * * * ? *)", THU_NOON),
            "2026-12-03T12:00:30"
        );
        // Fields past the seventh are ignored, as by cronexpr.
        assert_eq!(
            next("cron(0 0 0/1 * * ? * x y)", THU_NOON),
            "2026-12-03T13:00:00"
        );
        assert_eq!(next("CRON(0 10 * * ? *)", THU_NOON), "2026-12-04T10:00:00");
        assert_eq!(next("cron(@daily)", THU_NOON), "2026-12-04T00:00:00");
        assert_eq!(next("cron(@weekly)", THU_NOON), "2026-12-06T00:00:00");
        assert_eq!(
            next("cron(0 0 1 jan,July ? *)", THU_NOON),
            "2027-01-01T00:00:00"
        );
        assert_eq!(
            next("cron(0 0 1 jan,July ? *)", "2027-01-01T00:00:00Z"),
            "2027-07-01T00:00:00"
        );
        assert_eq!(
            next("cron(5,10-12,50/5 3 * * ? *)", "2026-12-03T03:11:00Z"),
            "2026-12-03T03:12:00"
        );
        assert_eq!(
            next("cron(5,10-12,50/5 3 * * ? *)", "2026-12-03T03:12:00Z"),
            "2026-12-03T03:50:00"
        );
        assert_eq!(
            next("cron(5,10-12,50/5 3 * * ? *)", "2026-12-03T03:55:00Z"),
            "2026-12-04T03:05:00"
        );
        // Both day fields restricted: either matches (Friday the 4th, then the 13th).
        assert_eq!(
            next("cron(0 0 13 * FRI *)", THU_NOON),
            "2026-12-04T00:00:00"
        );
        assert_eq!(
            next("cron(0 0 13 * FRI *)", "2026-12-11T00:00:00Z"),
            "2026-12-13T00:00:00"
        );
        // 1 is Sunday and 7 Saturday; 0 is no day.
        assert_eq!(next("cron(0 0 ? * 1 *)", THU_NOON), "2026-12-06T00:00:00");
        assert_eq!(next("cron(0 0 ? * 7 *)", THU_NOON), "2026-12-05T00:00:00");
        assert!(Schedule::parse("cron(0 0 ? * 0 *)").is_err());
        assert_eq!(next("cron(0 0 ? * 6-7 *)", THU_NOON), "2026-12-04T00:00:00");
        assert_eq!(
            next("cron(0 0 ? * 6-7 *)", "2026-12-04T00:00:00Z"),
            "2026-12-05T00:00:00"
        );
        assert_eq!(
            next("cron(0 0 ? * 6-7 *)", "2026-12-05T00:00:00Z"),
            "2026-12-11T00:00:00"
        );
        assert_eq!(next("cron(0 0 ? * SAT-SUN *)", THU_NOON), "never");
        // `*` takes the whole field, whatever follows it (cronexpr returns at once).
        assert_eq!(next("cron(0 *,x * * ? *)", THU_NOON), "2026-12-03T13:00:00");
        // A day-of-month that never comes in the chosen months.
        assert_eq!(next("cron(0 0 30-31 2 ? *)", THU_NOON), "never");
    }

    #[test]
    fn rates() {
        let t = secs(THU_NOON);
        for (expression, interval) in [
            ("rate(30 minutes)", 1800),
            ("RATE(30 MINUTES)", 1800),
            ("rate(1 minute)", 60),
            ("rate(40 minute)", 2400),
            ("rate(45minutes)", 2700),
            ("rate(0010 minutes)", 600),
            ("rate(1 Hour)", 3600),
            ("rate(5 hours)", 18_000),
            ("rate(1 day)", 86_400),
            ("rate(3\t days)", 259_200),
        ] {
            let schedule = Schedule::parse(expression).unwrap();
            assert_eq!(schedule, Schedule::Rate(interval), "{expression}");
            assert_eq!(schedule.next_after(t), Some(t + interval), "{expression}");
        }
        let huge = Schedule::parse("rate(9223372036854775807 days)").unwrap();
        assert_eq!(huge.next_after(t), None);
        assert_eq!(Schedule::parse("").unwrap(), Schedule::Once);
        assert_eq!(Schedule::Once.next_after(t), None);
    }

    #[test]
    fn rate_refusals_carry_upstreams_texts() {
        let invalid = |e: &str| {
            format!(
                "An error Schedule expression is not a valid rate expression. received while \
                 parsing rate expression {e}"
            )
        };
        let not_positive = |e: &str| {
            format!(
                "An error Schedule expression is not a valid rate expression. Time value should \
                 be a positive number. received while parsing rate expression {e}"
            )
        };
        for e in [
            "rate(foo)",
            "rate(1Test days)",
            "rate(5 days)rate(5 days)",
            "rate(45 seconds)",
            "rate(45 years)",
            "rate(-1 days)",
            "rate( 5 days)",
            "rate(5 days )",
            "rate(days)",
            "rate()",
            "rate",
            "rate 5 days",
        ] {
            assert_eq!(refusal(e), invalid(e));
        }
        for e in [
            "rate(0 minutes)",
            "rate(000 days)",
            "rate(10000000000000000000 days)",
        ] {
            assert_eq!(refusal(e), not_positive(e));
        }
    }

    #[test]
    fn cron_refusals_carry_upstreams_texts() {
        for e in [
            "cron",
            "cron(0 0 0/1 * * ? *)abc",
            "cron{0 0 0/1 * * ? *}",
            "cron(0 0 * * ? *",
            "cron(0 0\n* * ? *)",
        ] {
            assert_eq!(refusal(e), format!("Cron expression {e} is invalid."));
        }
        for e in [
            "at(12:00)",
            " ",
            "at(2026-07-07T15:55:00)",
            " cron(0 0 * * ? *)",
        ] {
            assert_eq!(
                refusal(e),
                format!("Unknown expression type detected in expression {e}")
            );
        }
        for (e, why) in [
            ("cron(0 0 * *)", "missing field(s)"),
            ("cron()", "missing field(s)"),
            ("cron(60 * * * ? *)", "syntax error in minute field: '60'"),
            ("cron(0 24 * * ? *)", "syntax error in hour field: '24'"),
            (
                "cron(0 0 32 * ? *)",
                "syntax error in day-of-month field: '32'",
            ),
            (
                "cron(0 0 0 * ? *)",
                "syntax error in day-of-month field: '0'",
            ),
            (
                "cron(0 0 L-2 * ? *)",
                "syntax error in day-of-month field: 'L-2'",
            ),
            ("cron(0 0 ? 13 ? *)", "syntax error in month field: '13'"),
            ("cron(0 0 ? Jnu ? *)", "syntax error in month field: 'Jnu'"),
            (
                "cron(0 0 ? * 8 *)",
                "syntax error in day-of-week field: '8'",
            ),
            (
                "cron(0 0 ? * MON#6 *)",
                "syntax error in day-of-week field: 'MON#6'",
            ),
            (
                "cron(0 0 ? * L *)",
                "syntax error in day-of-week field: 'L'",
            ),
            ("cron(0 0 * * ? 1969)", "syntax error in year field: '1969'"),
            ("cron(0 0 * * ? 2100)", "syntax error in year field: '2100'"),
            ("cron(x,*/0 0 * * ? *)", "invalid interval */0"),
            ("cron(*/60 * * * ? *)", "invalid interval */60"),
            ("cron(0 0/24 * * ? *)", "invalid interval 0/24"),
            ("cron(0 1-5/010 * * ? *)", "invalid interval 1-5/010"),
            ("cron(0 ,,, * * ? *)", "hour field: missing directive"),
            (
                "cron(30-10 * * * ? *)",
                "minute field: '30-10' selects no value",
            ),
            (
                "cron(0 0 * * ? 2030-2020)",
                "year field: '2030-2020' selects no value",
            ),
        ] {
            assert_eq!(
                refusal(e),
                format!("Error {why} received while parsing cron expression {e}")
            );
        }
    }

    /// Whether `t` matches `cron`, field by field: the oracle for the search in `next_after`.
    fn matches(cron: &Cron, t: u64) -> bool {
        let (y, m, d) = civil_from_days((t / 86_400) as i64);
        let s = t % 86_400;
        let has = |bits: u64, v: u64| bits >> v & 1 == 1;
        cron.has_year(y)
            && has(cron.months, m.into())
            && has(cron.days(y, m), d.into())
            && has(cron.hours, s / 3600)
            && has(cron.minutes, s / 60 % 60)
            && has(cron.seconds, s % 60)
    }

    /// A fixed-seed xorshift, so a failure replays.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    #[test]
    fn random_fields_never_panic_nor_run_long() {
        const ATOMS: [&str; 22] = [
            "*", "?", "0", "1", "2", "5", "7", "12", "15", "31", "59", "60", "2026", "2099", "MON",
            "fri", "JAN", "L", "LW", "@daily", "x", "",
        ];
        const JOINS: [&str; 8] = ["", "-", "/", "#", ",", "L", "W", " "];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let started = std::time::Instant::now();
        let (mut taken, mut fired, mut checked) = (0, 0, 0);
        for _ in 0..20_000 {
            let field = |rng: &mut Rng| {
                let mut f = String::from(ATOMS[rng.below(ATOMS.len())]);
                for _ in 0..rng.below(3) {
                    f.push_str(JOINS[rng.below(JOINS.len())]);
                    f.push_str(ATOMS[rng.below(ATOMS.len())]);
                }
                f
            };
            let fields: Vec<String> = (0..5 + rng.below(3)).map(|_| field(&mut rng)).collect();
            let expression = format!("cron({})", fields.join(" "));
            let Ok(schedule) = Schedule::parse(&expression) else {
                continue;
            };
            taken += 1;
            for after in [0, secs(THU_NOON), secs("2099-12-31T23:59:59Z"), u64::MAX] {
                if let Some(t) = schedule.next_after(after) {
                    fired += 1;
                    assert!(t > after, "{expression} after {after}: {t}");
                    // The fire time is itself the next one after the second before it.
                    assert_eq!(schedule.next_after(t - 1), Some(t), "{expression}");
                }
            }
            // Against a scan of every minute of the next three days (whole-minute schedules).
            let Schedule::Cron(cron) = schedule else {
                continue;
            };
            if cron.seconds != 1 {
                continue;
            }
            let after = secs(THU_NOON) + rng.below(4 * 365 * 86_400) as u64;
            let end = (after / 60 + 3 * 1440) * 60;
            let mut scan = (after / 60 + 1..=end / 60).map(|m| m * 60);
            match scan.find(|&t| matches(&cron, t)) {
                Some(t) => assert_eq!(cron.next_after(after), Some(t), "{expression} {after}"),
                None => assert!(
                    cron.next_after(after).is_none_or(|t| t > end),
                    "{expression} {after}"
                ),
            }
            checked += 1;
        }
        // The generator must reach both outcomes, or the test proves nothing.
        assert!(
            taken > 300 && fired > 300 && checked > 200,
            "taken {taken}, fired {fired}, checked {checked}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }
}
