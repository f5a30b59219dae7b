//! How an emulator is set up: address, tokens, projects, limits, faults, state file.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::faults::FaultSpec;
use crate::limits::RateLimitSpec;

/// The full-access token an emulator accepts unless told otherwise.
pub const DEFAULT_TOKEN: &str = "emulator-token";
/// The project an emulator holds unless told otherwise.
pub const DEFAULT_PROJECT: &str = "default";
/// The environments of the default project.
pub const DEFAULT_ENVIRONMENTS: [&str; 2] = ["production", "test"];
/// How long a segment import stays `in_progress` before it completes.
pub const DEFAULT_IMPORT_DELAY: Duration = Duration::from_millis(200);

/// An access token the emulator accepts, with the custom-role actions it may perform.
///
/// Text form (the `--limited-token` flag): `TOKEN=ACTION[,ACTION...]`, e.g.
/// `reader=createSegment,updateIncluded`; a bare `TOKEN` has full access. The actions are
/// LaunchDarkly's role actions (`createSegment`, `updateIncluded`, `updateExcluded`,
/// `deleteSegment`, `updateName`, `updateDescription`, `updateTags`, `importEventData`,
/// `createMetric`, `deleteMetric`, `updateEventKey`, …) or `*`. Reads need no action.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSpec {
    /// The raw value expected in `Authorization`.
    pub token: String,
    /// Allowed actions; `None` allows all.
    pub actions: Option<BTreeSet<String>>,
}

impl TokenSpec {
    /// A token allowed to do everything.
    pub fn full(token: impl Into<String>) -> Self {
        Self { token: token.into(), actions: None }
    }

    /// A token allowed only `actions`; anything else is answered `403`.
    pub fn limited<I, S>(token: impl Into<String>, actions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self { token: token.into(), actions: Some(actions.into_iter().map(Into::into).collect()) }
    }

    /// Whether this token may perform `action`.
    pub fn allows(&self, action: &str) -> bool {
        self.actions.as_ref().is_none_or(|a| a.contains("*") || a.contains(action))
    }
}

impl fmt::Debug for TokenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSpec")
            .field("token", &"**REDACTED**")
            .field("actions", &self.actions)
            .finish()
    }
}

impl FromStr for TokenSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| Error::InvalidToken {
            input: s
                .split_once('=')
                .map_or("**REDACTED**".to_owned(), |(_, a)| format!("**REDACTED**={a}")),
            reason: reason.to_owned(),
        };
        match s.split_once('=') {
            None if s.trim().is_empty() => Err(err("the token is empty")),
            None => Ok(Self::full(s.trim())),
            Some((token, actions)) => {
                if token.trim().is_empty() {
                    return Err(err("the token is empty"));
                }
                let actions: BTreeSet<String> = actions
                    .split(',')
                    .map(str::trim)
                    .filter(|a| !a.is_empty())
                    .map(str::to_owned)
                    .collect();
                if actions.is_empty() {
                    return Err(err("list at least one action after `=`"));
                }
                Ok(Self { token: token.trim().to_owned(), actions: Some(actions) })
            }
        }
    }
}

/// A project and its environments.
///
/// Text form (the `--project` flag): `KEY=ENV[,ENV...]`, e.g. `mobile=production,staging`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectSpec {
    /// Project key.
    pub key: String,
    /// Environment keys.
    pub environments: Vec<String>,
}

impl ProjectSpec {
    /// A project with these environments.
    pub fn new<I, S>(key: impl Into<String>, environments: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self { key: key.into(), environments: environments.into_iter().map(Into::into).collect() }
    }
}

fn valid_key(k: &str) -> bool {
    !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl FromStr for ProjectSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| Error::InvalidProject { input: s.to_owned(), reason };
        let (key, envs) =
            s.split_once('=').ok_or_else(|| err("expected `KEY=ENV[,ENV...]`".into()))?;
        let key = key.trim();
        if !valid_key(key) {
            return Err(err(format!("`{key}` is not a key: use letters, digits, `-`, `_` or `.`")));
        }
        let environments: Vec<String> =
            envs.split(',').map(str::trim).filter(|e| !e.is_empty()).map(str::to_owned).collect();
        if environments.is_empty() {
            return Err(err("list at least one environment".into()));
        }
        if let Some(bad) = environments.iter().find(|e| !valid_key(e)) {
            return Err(err(format!("`{bad}` is not a key: use letters, digits, `-`, `_` or `.`")));
        }
        Ok(Self { key: key.to_owned(), environments })
    }
}

/// Everything an emulator is started with.
///
/// `Default` gives: `127.0.0.1`, an ephemeral port, REST and events on one port, the token
/// [`DEFAULT_TOKEN`], the project [`DEFAULT_PROJECT`] with [`DEFAULT_ENVIRONMENTS`], no state
/// file, no rate limits, no faults, seed 0 and [`DEFAULT_IMPORT_DELAY`].
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Address to bind.
    pub host: IpAddr,
    /// Port for the REST API (and the events path unless `events_port` is set); 0 picks one.
    pub port: u16,
    /// A separate port for `/v2/event-data-import/…`; `None` serves it on `port`.
    pub events_port: Option<u16>,
    /// Accepted tokens; the first is the one [`crate::Emulator::token`] returns.
    pub tokens: Vec<TokenSpec>,
    /// State loaded at start when the file exists, and saved on shutdown and within a second
    /// of each change.
    pub state_file: Option<PathBuf>,
    /// Request budgets.
    pub rate_limits: Vec<RateLimitSpec>,
    /// Fault rules.
    pub faults: Vec<FaultSpec>,
    /// Seed of the fault rates.
    pub seed: u64,
    /// Projects and environments that exist.
    pub projects: Vec<ProjectSpec>,
    /// How long a segment import stays `in_progress`.
    pub import_delay: Duration,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            events_port: None,
            tokens: vec![TokenSpec::full(DEFAULT_TOKEN)],
            state_file: None,
            rate_limits: Vec::new(),
            faults: Vec::new(),
            seed: 0,
            projects: vec![ProjectSpec::new(DEFAULT_PROJECT, DEFAULT_ENVIRONMENTS)],
            import_delay: DEFAULT_IMPORT_DELAY,
        }
    }
}

impl EmulatorConfig {
    /// Sets the port.
    #[must_use]
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Replaces the full-access token (limited tokens are kept).
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        let token = TokenSpec::full(token);
        match self.tokens.iter().position(|t| t.actions.is_none()) {
            Some(i) => {
                self.tokens.remove(i);
                self.tokens.insert(0, token);
            }
            None => self.tokens.insert(0, token),
        }
        self
    }

    /// Adds a token limited to some actions.
    #[must_use]
    pub fn with_limited_token(mut self, token: TokenSpec) -> Self {
        self.tokens.push(token);
        self
    }

    /// Sets the state file.
    #[must_use]
    pub fn with_state_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.state_file = Some(path.into());
        self
    }

    /// Sets the rate limits.
    #[must_use]
    pub fn with_rate_limits(mut self, limits: Vec<RateLimitSpec>) -> Self {
        self.rate_limits = limits;
        self
    }

    /// Sets the faults.
    #[must_use]
    pub fn with_faults(mut self, faults: Vec<FaultSpec>) -> Self {
        self.faults = faults;
        self
    }

    /// Sets the fault seed.
    #[must_use]
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the projects (replacing the default one).
    #[must_use]
    pub fn with_projects(mut self, projects: Vec<ProjectSpec>) -> Self {
        self.projects = projects;
        self
    }

    /// Sets how long imports stay `in_progress`.
    #[must_use]
    pub fn with_import_delay(mut self, delay: Duration) -> Self {
        self.import_delay = delay;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::{ProjectSpec, TokenSpec};

    #[test]
    fn parses_tokens_and_projects() {
        let t: TokenSpec = "abc=createSegment, updateIncluded".parse().unwrap();
        assert!(
            t.allows("createSegment") && t.allows("updateIncluded") && !t.allows("deleteSegment")
        );
        assert!(format!("{t:?}").contains("REDACTED") && !format!("{t:?}").contains("abc"));
        assert!("abc".parse::<TokenSpec>().unwrap().allows("anything"));
        assert!("abc=".parse::<TokenSpec>().is_err());
        let p: ProjectSpec = "mobile=production,staging".parse().unwrap();
        assert_eq!(p, ProjectSpec::new("mobile", ["production", "staging"]));
        assert!("mobile".parse::<ProjectSpec>().is_err());
        assert!("mo bile=x".parse::<ProjectSpec>().is_err());
    }
}
