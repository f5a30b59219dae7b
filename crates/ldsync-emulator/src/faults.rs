//! Faults on demand: error statuses, connection resets, hangs and trickled bodies, chosen by a
//! seeded rate or by a script ("the 3rd request to this route").

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::limits::parse_duration;
use crate::route::RoutePattern;

/// The pause between two bytes of a trickled body unless a fault says otherwise.
pub const DEFAULT_TRICKLE_DELAY: Duration = Duration::from_millis(100);

/// What a faulted request gets instead of its real answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FaultKind {
    /// `500 internal_server_error`.
    #[serde(rename = "500")]
    InternalServerError,
    /// `502 bad_gateway`.
    #[serde(rename = "502")]
    BadGateway,
    /// `503 service_unavailable`.
    #[serde(rename = "503")]
    ServiceUnavailable,
    /// `504 gateway_timeout`.
    #[serde(rename = "504")]
    GatewayTimeout,
    /// The connection is reset (TCP RST) instead of answered.
    #[serde(rename = "reset")]
    ConnectionReset,
    /// No response at all until the client gives up or the emulator stops.
    #[serde(rename = "hang")]
    Hang,
    /// A `503` whose headers come at once and whose body comes one byte at a time.
    #[serde(rename = "trickle")]
    Trickle,
}

impl FaultKind {
    /// The name used in the text and JSON forms.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InternalServerError => "500",
            Self::BadGateway => "502",
            Self::ServiceUnavailable => "503",
            Self::GatewayTimeout => "504",
            Self::ConnectionReset => "reset",
            Self::Hang => "hang",
            Self::Trickle => "trickle",
        }
    }
}

impl FromStr for FaultKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim() {
            "500" => Self::InternalServerError,
            "502" => Self::BadGateway,
            "503" => Self::ServiceUnavailable,
            "504" => Self::GatewayTimeout,
            "reset" => Self::ConnectionReset,
            "hang" => Self::Hang,
            "trickle" => Self::Trickle,
            other => {
                return Err(format!(
                    "unknown fault `{other}`: use 500, 502, 503, 504, reset, hang or trickle"
                ))
            }
        })
    }
}

/// One fault rule.
///
/// Text form (the `--faults` flag): `KIND[@OPTION,OPTION...]` with `KIND` one of `500`, `502`,
/// `503`, `504`, `reset`, `hang`, `trickle` and the options
/// - `route=PATTERN` — only requests matching the [`RoutePattern`] (default: every request but
///   `/_emulator/`),
/// - `rate=F` — fault each matching request with probability `F` (0–1), drawn from the seed,
/// - `nth=N` — fault the `N`th matching request (1-based; repeat the option for several),
/// - `max=N` — inject at most `N` times,
/// - `delay=DURATION` — the pause between bytes of a `trickle` body (default `100ms`).
///
/// Without `rate` or `nth` every matching request is faulted. Examples: `503@rate=0.1`,
/// `reset@route=POST /v2/event-data-import/*/*,nth=3`.
///
/// JSON form (in `/_emulator/config`): that text, or `{"kind": "503", "route": "…" | null,
/// "rate": 0.1 | null, "nth": [3], "max": null, "delay_ms": 100}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FaultJson", into = "FaultObject")]
pub struct FaultSpec {
    /// What happens to a faulted request.
    pub kind: FaultKind,
    /// Which requests the rule looks at; `None` is all of them.
    pub route: Option<RoutePattern>,
    /// Probability of faulting a matching request.
    pub rate: Option<f64>,
    /// 1-based positions, among matching requests, of the requests to fault.
    pub nth: Vec<u64>,
    /// Most injections, if bounded.
    pub max: Option<u64>,
    /// Pause between bytes of a trickled body.
    pub delay: Duration,
}

impl FaultSpec {
    /// A rule that faults every request with `kind`; narrow it with the other builders.
    pub fn new(kind: FaultKind) -> Self {
        Self {
            kind,
            route: None,
            rate: None,
            nth: Vec::new(),
            max: None,
            delay: DEFAULT_TRICKLE_DELAY,
        }
    }

    /// Limits the rule to requests matching `pattern`.
    pub fn on_route(mut self, pattern: &str) -> Result<Self, Error> {
        self.route = Some(
            pattern
                .parse()
                .map_err(|reason| Error::InvalidFault { input: pattern.to_owned(), reason })?,
        );
        Ok(self)
    }

    /// Faults the `n`th matching request (1-based).
    #[must_use]
    pub fn nth(mut self, n: u64) -> Self {
        self.nth.push(n);
        self
    }

    /// Faults matching requests with probability `rate`.
    #[must_use]
    pub fn with_rate(mut self, rate: f64) -> Self {
        self.rate = Some(rate);
        self
    }
}

impl fmt::Display for FaultSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.as_str())?;
        let mut opts = Vec::new();
        if let Some(r) = &self.route {
            opts.push(format!("route={r}"));
        }
        if let Some(r) = self.rate {
            opts.push(format!("rate={r}"));
        }
        opts.extend(self.nth.iter().map(|n| format!("nth={n}")));
        if let Some(m) = self.max {
            opts.push(format!("max={m}"));
        }
        if self.delay != DEFAULT_TRICKLE_DELAY {
            opts.push(format!("delay={}ms", self.delay.as_millis()));
        }
        if !opts.is_empty() {
            write!(f, "@{}", opts.join(","))?;
        }
        Ok(())
    }
}

impl FromStr for FaultSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| Error::InvalidFault { input: s.to_owned(), reason };
        let (kind, opts) = s.split_once('@').unwrap_or((s, ""));
        let mut spec = Self::new(kind.parse().map_err(err)?);
        for opt in opts.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let (k, v) = opt
                .split_once('=')
                .ok_or_else(|| err(format!("option `{opt}` is not `NAME=VALUE`")))?;
            match k.trim() {
                "route" => spec.route = Some(v.parse().map_err(err)?),
                "rate" => {
                    let r: f64 =
                        v.trim().parse().map_err(|_| err(format!("`{v}` is not a rate")))?;
                    if !(0.0..=1.0).contains(&r) {
                        return Err(err(format!("rate `{v}` must be between 0 and 1")));
                    }
                    spec.rate = Some(r);
                }
                "nth" => spec.nth.push(
                    v.trim()
                        .parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| err(format!("`{v}` is not a position (1, 2, …)")))?,
                ),
                "max" => {
                    spec.max =
                        Some(v.trim().parse().map_err(|_| err(format!("`{v}` is not a count")))?);
                }
                "delay" => spec.delay = parse_duration(v).map_err(err)?,
                other => {
                    return Err(err(format!(
                        "unknown option `{other}`: use route, rate, nth, max or delay"
                    )))
                }
            }
        }
        Ok(spec)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FaultJson {
    Text(String),
    Object(FaultObject),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultObject {
    kind: FaultKind,
    #[serde(default)]
    route: Option<String>,
    #[serde(default)]
    rate: Option<f64>,
    #[serde(default)]
    nth: Vec<u64>,
    #[serde(default)]
    max: Option<u64>,
    #[serde(default = "default_delay_ms")]
    delay_ms: u64,
}

fn default_delay_ms() -> u64 {
    u64::try_from(DEFAULT_TRICKLE_DELAY.as_millis()).expect("a small constant")
}

impl TryFrom<FaultJson> for FaultSpec {
    type Error = Error;

    fn try_from(value: FaultJson) -> Result<Self, Error> {
        match value {
            FaultJson::Text(t) => t.parse(),
            FaultJson::Object(o) => {
                let mut spec = Self::new(o.kind);
                if let Some(r) = o.route {
                    spec = spec.on_route(&r)?;
                }
                if let Some(rate) = o.rate {
                    if !(0.0..=1.0).contains(&rate) {
                        return Err(Error::InvalidFault {
                            input: format!("rate: {rate}"),
                            reason: "the rate must be between 0 and 1".into(),
                        });
                    }
                }
                spec.rate = o.rate;
                spec.nth = o.nth;
                spec.max = o.max;
                spec.delay = Duration::from_millis(o.delay_ms);
                Ok(spec)
            }
        }
    }
}

impl From<FaultSpec> for FaultObject {
    fn from(s: FaultSpec) -> Self {
        Self {
            kind: s.kind,
            route: s.route.map(|r| r.to_string()),
            rate: s.rate,
            nth: s.nth,
            max: s.max,
            delay_ms: u64::try_from(s.delay.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// A rule with its counters.
#[derive(Debug)]
struct Rule {
    spec: FaultSpec,
    matched: u64,
    injected: u64,
}

/// All fault rules; decides, deterministically for a seed, which requests are faulted.
#[derive(Debug, Default)]
pub(crate) struct FaultEngine {
    seed: u64,
    rules: Vec<Rule>,
}

/// A fault to inject.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Injection {
    pub(crate) kind: FaultKind,
    pub(crate) delay: Duration,
}

impl FaultEngine {
    pub(crate) fn new(specs: Vec<FaultSpec>, seed: u64) -> Self {
        Self {
            seed,
            rules: specs.into_iter().map(|spec| Rule { spec, matched: 0, injected: 0 }).collect(),
        }
    }

    pub(crate) fn specs(&self) -> Vec<FaultSpec> {
        self.rules.iter().map(|r| r.spec.clone()).collect()
    }

    pub(crate) fn seed(&self) -> u64 {
        self.seed
    }

    /// Counts the request against every rule matching it and returns the first rule that fires.
    ///
    /// A rate draw depends only on the seed, the rule's position and the request's position
    /// among the rule's matches, so a given sequence of requests to a route is faulted the same
    /// way on every run whatever the other routes see.
    pub(crate) fn decide(&mut self, method: &str, path: &str) -> Option<Injection> {
        let mut chosen = None;
        for (index, rule) in self.rules.iter_mut().enumerate() {
            if rule.spec.route.as_ref().is_some_and(|r| !r.matches(method, path)) {
                continue;
            }
            rule.matched += 1;
            if chosen.is_some() || rule.spec.max.is_some_and(|m| rule.injected >= m) {
                continue;
            }
            let by_position = rule.spec.nth.contains(&rule.matched);
            let by_rate = rule
                .spec
                .rate
                .is_some_and(|rate| unit_draw(self.seed, index as u64, rule.matched) < rate);
            let always = rule.spec.rate.is_none() && rule.spec.nth.is_empty();
            if by_position || by_rate || always {
                rule.injected += 1;
                chosen = Some(Injection { kind: rule.spec.kind, delay: rule.spec.delay });
            }
        }
        chosen
    }
}

/// A number in `[0, 1)` from splitmix64 over the three inputs.
fn unit_draw(seed: u64, rule: u64, position: u64) -> f64 {
    let mut z = seed
        ^ rule.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ position.wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    #[expect(clippy::cast_precision_loss, reason = "53 random bits fit an f64 exactly")]
    let unit = (z >> 11) as f64 / (1u64 << 53) as f64;
    unit
}

#[cfg(test)]
mod tests {
    use super::{FaultEngine, FaultKind, FaultSpec};

    #[test]
    fn parses_text_form() {
        let f: FaultSpec = "reset@route=POST /v2/event-data-import/*/*,nth=3".parse().unwrap();
        assert_eq!(f.kind, FaultKind::ConnectionReset);
        assert_eq!(f.nth, vec![3]);
        assert!(f.route.as_ref().unwrap().matches("POST", "/v2/event-data-import/p/e"));
        assert_eq!(f.to_string().parse::<FaultSpec>().unwrap(), f);
        let r: FaultSpec = "503@rate=0.1".parse().unwrap();
        assert_eq!(r.rate, Some(0.1));
        assert!("418".parse::<FaultSpec>().is_err());
        assert!("503@rate=2".parse::<FaultSpec>().is_err());
        assert!("503@nth=0".parse::<FaultSpec>().is_err());
        assert!("503@color=red".parse::<FaultSpec>().is_err());
        let j: FaultSpec = serde_json::from_str(r#"{"kind":"hang","nth":[1,2]}"#).unwrap();
        assert_eq!(j.nth, vec![1, 2]);
        let t: FaultSpec = serde_json::from_str(r#""trickle@delay=5ms""#).unwrap();
        assert_eq!(t.delay.as_millis(), 5);
    }

    #[test]
    fn rate_is_deterministic_for_a_seed() {
        let run = |seed| {
            let mut e = FaultEngine::new(vec!["503@rate=0.3".parse().unwrap()], seed);
            (0..200).map(|_| e.decide("GET", "/api/v2/x").is_some()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        let hits = run(7).iter().filter(|h| **h).count();
        assert!((30..90).contains(&hits), "{hits} of 200 at rate 0.3");
    }

    #[test]
    fn nth_and_max() {
        let mut e = FaultEngine::new(
            vec!["500@route=POST /a,nth=2".parse().unwrap(), "502@max=1".parse().unwrap()],
            0,
        );
        assert_eq!(e.decide("POST", "/a").map(|i| i.kind), Some(FaultKind::BadGateway));
        assert_eq!(e.decide("POST", "/a").map(|i| i.kind), Some(FaultKind::InternalServerError));
        assert!(e.decide("POST", "/a").is_none());
    }
}
