//! Per-request fault injection: the `SPEC` language used in the `X-Sim-Fault` header and in
//! `[[sim:SPEC]]` markers inside prompts.
//!
//! A SPEC is a comma-separated list of items; unknown or malformed items are ignored so that
//! user text that happens to look like a marker can never break a request.
//!
//! | item | effect |
//! |---|---|
//! | `submit=<status>` | every submit of this body answers `<status>` (no task) |
//! | `submit-once=<status>` | the first submit per idempotency key (or body) answers `<status>`, retries succeed |
//! | `lost=<status>` | the first submit creates the task but answers `<status>` (a reply lost after acceptance) |
//! | `garbled` | the first submit creates the task but answers `200` with a body cut off mid-JSON (an undecodable success) |
//! | `fail` | the task ends `failed` |
//! | `cancel` | the task ends `cancelled` |
//! | `never` | the task stays `processing` forever |
//! | `status=<status>` | every status poll of the task answers `<status>` |
//! | `status-once=<status>` | the first status poll answers `<status>` |
//! | `slow=<ms>` | every answer about the task (submit, poll, download) is delayed |
//! | `duration=<ms>` | this task's duration (also its `estimated_time`) |
//! | `no-estimate` | omit `estimated_time` |
//! | `body=<openai\|success\|codemsg\|text\|html>` | style of injected error bodies (docs/apimart.md lists the first four; `html` is a proxy's error page) |
//! | `balance=<status>` | `GET /v1/balance` answers `<status>` (header only: that call has no prompt) |
//! | `balance=zero` | `GET /v1/balance` reports nothing left (header only) |
//! | `result-addr=<ip:port>` | the completed task's image URLs point at `http://<ip:port>/files/…` instead of the simulator (a hostile or broken upstream; tests of the download policy) |

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::MAX_TASK_DURATION;
use crate::wire::ErrorStyle;

/// Name of the request header carrying a SPEC.
pub const FAULT_HEADER: &str = "x-sim-fault";
/// Opening of a prompt marker; the SPEC runs to the next [`MARKER_CLOSE`].
pub const MARKER_OPEN: &str = "[[sim:";
/// Closing of a prompt marker.
pub const MARKER_CLOSE: &str = "]]";
/// Longest `slow=` delay honoured (10 min): longer than any client timeout worth testing,
/// short enough that a typo cannot pin a connection for hours.
pub const MAX_SLOW: Duration = Duration::from_secs(600);
/// Lowest status accepted in `submit=`/`status=` items: only error statuses make sense.
pub const MIN_FAULT_STATUS: u16 = 400;
/// Highest status accepted in `submit=`/`status=` items.
pub const MAX_FAULT_STATUS: u16 = 599;

/// What a `balance=` item does to `GET /v1/balance`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BalanceFault {
    /// Answer this error status.
    Status(u16),
    /// Answer normally, with nothing left.
    Zero,
}

/// Parsed fault items; `Default` means "no fault".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FaultSpec {
    /// `submit=<status>`.
    pub submit: Option<u16>,
    /// `submit-once=<status>`.
    pub submit_once: Option<u16>,
    /// `lost=<status>`.
    pub lost: Option<u16>,
    /// `garbled`.
    pub garbled: bool,
    /// `fail`.
    pub fail: bool,
    /// `cancel`.
    pub cancel: bool,
    /// `never`.
    pub never: bool,
    /// `status=<status>`.
    pub status: Option<u16>,
    /// `status-once=<status>`.
    pub status_once: Option<u16>,
    /// `slow=<ms>`, capped at [`MAX_SLOW`].
    pub slow: Option<Duration>,
    /// `duration=<ms>`, capped at [`MAX_TASK_DURATION`].
    pub duration: Option<Duration>,
    /// `no-estimate`.
    pub no_estimate: bool,
    /// `body=<style>`.
    pub body: Option<ErrorStyle>,
    /// `balance=<status>` or `balance=zero`.
    pub balance: Option<BalanceFault>,
    /// `result-addr=<ip:port>`.
    pub result_addr: Option<SocketAddr>,
}

impl FaultSpec {
    /// Parses one SPEC. Never fails: unknown items and bad values are skipped.
    #[must_use]
    pub fn parse(spec: &str) -> Self {
        let mut out = Self::default();
        for item in spec.split(',') {
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim())),
                None => (item.trim(), None),
            };
            let key = key.to_ascii_lowercase();
            match (key.as_str(), value) {
                ("submit", Some(v)) => set(&mut out.submit, parse_status(v)),
                ("submit-once", Some(v)) => set(&mut out.submit_once, parse_status(v)),
                ("lost", Some(v)) => set(&mut out.lost, parse_status(v)),
                ("status", Some(v)) => set(&mut out.status, parse_status(v)),
                ("status-once", Some(v)) => set(&mut out.status_once, parse_status(v)),
                ("slow", Some(v)) => set(&mut out.slow, parse_ms(v, MAX_SLOW)),
                ("duration", Some(v)) => set(&mut out.duration, parse_ms(v, MAX_TASK_DURATION)),
                ("body", Some(v)) => set(&mut out.body, v.parse().ok()),
                ("result-addr", Some(v)) => set(&mut out.result_addr, v.parse().ok()),
                ("balance", Some(v)) if v.eq_ignore_ascii_case("zero") => {
                    out.balance = Some(BalanceFault::Zero);
                }
                ("balance", Some(v)) => {
                    set(&mut out.balance, parse_status(v).map(BalanceFault::Status));
                }
                ("garbled", None) => out.garbled = true,
                ("fail", None) => out.fail = true,
                ("cancel", None) => out.cancel = true,
                ("never", None) => out.never = true,
                ("no-estimate", None) => out.no_estimate = true,
                _ => {}
            }
        }
        out
    }

    /// Parses every `[[sim:SPEC]]` marker of a prompt, later markers overriding earlier.
    #[must_use]
    pub fn from_prompt(prompt: &str) -> Self {
        let mut out = Self::default();
        for spec in prompt_markers(prompt) {
            out.merge(&Self::parse(spec));
        }
        out
    }

    /// Overlays `other`: its set values win, flags accumulate.
    pub fn merge(&mut self, other: &Self) {
        fn over<T: Copy>(mine: &mut Option<T>, theirs: Option<T>) {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
        over(&mut self.submit, other.submit);
        over(&mut self.submit_once, other.submit_once);
        over(&mut self.lost, other.lost);
        over(&mut self.status, other.status);
        over(&mut self.status_once, other.status_once);
        over(&mut self.slow, other.slow);
        over(&mut self.duration, other.duration);
        over(&mut self.body, other.body);
        over(&mut self.balance, other.balance);
        over(&mut self.result_addr, other.result_addr);
        self.garbled |= other.garbled;
        self.fail |= other.fail;
        self.cancel |= other.cancel;
        self.never |= other.never;
        self.no_estimate |= other.no_estimate;
    }
}

fn set<T>(slot: &mut Option<T>, value: Option<T>) {
    if value.is_some() {
        *slot = value;
    }
}

fn parse_status(v: &str) -> Option<u16> {
    v.parse::<u16>()
        .ok()
        .filter(|s| (MIN_FAULT_STATUS..=MAX_FAULT_STATUS).contains(s))
}

fn parse_ms(v: &str, cap: Duration) -> Option<Duration> {
    v.parse::<u64>()
        .ok()
        .map(|ms| Duration::from_millis(ms).min(cap))
}

/// The SPEC texts of all complete `[[sim:…]]` markers in `prompt`, in order. An unclosed
/// marker ends the scan.
#[must_use]
pub fn prompt_markers(prompt: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = prompt;
    while let Some(start) = rest.find(MARKER_OPEN) {
        let after = &rest[start + MARKER_OPEN.len()..];
        let Some(end) = after.find(MARKER_CLOSE) else {
            break;
        };
        out.push(&after[..end]);
        rest = &after[end + MARKER_CLOSE.len()..];
    }
    out
}

/// `prompt` without its complete markers (for the banner of the result image).
#[must_use]
pub fn strip_markers(prompt: &str) -> String {
    let mut out = String::with_capacity(prompt.len());
    let mut rest = prompt;
    while let Some(start) = rest.find(MARKER_OPEN) {
        let after = &rest[start + MARKER_OPEN.len()..];
        let Some(end) = after.find(MARKER_CLOSE) else {
            break;
        };
        out.push_str(&rest[..start]);
        rest = &after[end + MARKER_CLOSE.len()..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_item() {
        let s = FaultSpec::parse(
            " submit=503 ,submit-once=429,lost=502,fail,cancel,never,status=500,status-once=504,\
             slow=250,duration=1500,no-estimate,body=text,garbled,balance=503,\
             result-addr=127.0.0.2:8081",
        );
        assert_eq!(
            s,
            FaultSpec {
                submit: Some(503),
                submit_once: Some(429),
                lost: Some(502),
                garbled: true,
                fail: true,
                cancel: true,
                never: true,
                status: Some(500),
                status_once: Some(504),
                slow: Some(Duration::from_millis(250)),
                duration: Some(Duration::from_millis(1500)),
                no_estimate: true,
                body: Some(ErrorStyle::Text),
                balance: Some(BalanceFault::Status(503)),
                result_addr: Some(SocketAddr::from(([127, 0, 0, 2], 8081))),
            }
        );
        let s = FaultSpec::parse("balance=ZERO,body=html");
        assert_eq!(s.balance, Some(BalanceFault::Zero));
        assert_eq!(s.body, Some(ErrorStyle::Html));
    }

    #[test]
    fn ignores_unknown_and_malformed_items() {
        let s = FaultSpec::parse(
            "bogus,submit=200,status=abc,slow=-1,fail=yes,=,,body=xml,balance=200,garbled=1,\
             result-addr=example.com:80",
        );
        assert_eq!(s, FaultSpec::default());
    }

    #[test]
    fn caps_long_delays() {
        let s = FaultSpec::parse("slow=99999999999,duration=18446744073709551615");
        assert_eq!(s.slow, Some(MAX_SLOW));
        assert_eq!(s.duration, Some(MAX_TASK_DURATION));
    }

    #[test]
    fn markers_are_found_anywhere_and_stripped() {
        let p = "a woman [[sim:fail]] in red [[sim:slow=10]] dress [[sim:never";
        assert_eq!(prompt_markers(p), vec!["fail", "slow=10"]);
        assert_eq!(strip_markers(p), "a woman  in red  dress [[sim:never");
        let f = FaultSpec::from_prompt(p);
        assert!(f.fail && !f.never);
        assert_eq!(f.slow, Some(Duration::from_millis(10)));
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = FaultSpec::parse(&s);
        }

        #[test]
        fn marker_extraction_never_panics_and_is_consistent(
            s in "(\\[\\[sim:|\\]\\]|[a-z=,0-9 ]|é|漢){0,60}"
        ) {
            let markers = prompt_markers(&s);
            let stripped = strip_markers(&s);
            let marker_len: usize = markers.iter().map(|m| m.len() + MARKER_OPEN.len() + MARKER_CLOSE.len()).sum();
            prop_assert_eq!(stripped.len() + marker_len, s.len());
            let _ = FaultSpec::from_prompt(&s);
        }

        #[test]
        fn known_statuses_round_trip(st in 400u16..=599, ms in 0u64..600_000) {
            let s = FaultSpec::parse(&format!("status={st},slow={ms}"));
            prop_assert_eq!(s.status, Some(st));
            prop_assert_eq!(s.slow, Some(Duration::from_millis(ms)));
        }
    }
}
