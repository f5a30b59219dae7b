//! Problems are all reported, each at its file, line and column.

use ldsync_config::{load_with, Error};

use crate::{example_env, project};

const PROJECT: &str = r#"[warehouses.analytics]
postgres = "${WAREHOUSE_URL}"

[environments.production]
token = "${LD_ACCESS_TOKEN}"
project = "default"
environment = "production"
"#;

fn problems(config: &str, syncs: &[(&str, &str)]) -> Vec<String> {
    let dir = project(config, syncs);
    let err = load_with(&dir.path().join("ldsync.toml"), &example_env()).unwrap_err();
    let Error::Invalid(diagnostics) = err else { panic!("expected problems, got {err}") };
    let prefix = format!("{}/", dir.path().display());
    diagnostics.iter().map(|d| d.to_string().replace(&prefix, "")).collect()
}

#[test]
fn every_problem_across_files_is_reported_at_once() {
    let found = problems(
        PROJECT,
        &[
            (
                "a.toml",
                "warehouse = \"nope\"\nenvironment = \"production\"\n[segment]\nkey = \"s\"\nquery = \"select 1\"\n",
            ),
            (
                "b.toml",
                "warehouse = \"analytics\"\nenvironment = \"production\"\n[segment]\nkey = \"s\"\nquery = \"select 1\"\n",
            ),
            (
                "c.toml",
                "warehouse = \"analytics\"\nenvironment = \"production\"\n[segment]\nkey = \"s\"\nquery = \"select 1\"\n",
            ),
            ("d.toml", "warehouse = \"analytics\"\nenvironment = \"production\"\nbogus = 1\n"),
        ],
    );
    assert_eq!(found.len(), 4, "{found:#?}");
    assert!(found[0].starts_with("syncs/a.toml:1:13: unknown warehouse `nope`"), "{found:#?}");
    // `a` still claims its segment: its environment is fine, so `b` and `c` are the extra ones.
    for (at, sync) in [(1, "b"), (2, "c")] {
        assert_eq!(
            found[at],
            format!("syncs/{sync}.toml:4:7: segment `s` in environment `production` is already written by sync `a` (syncs/a.toml:4:7): one sync per segment")
        );
    }
    assert!(found[3].starts_with("syncs/d.toml:3:1: unknown field `bogus`"), "{found:#?}");
}

#[test]
fn a_missing_variable_names_the_file_line_and_column() {
    let config = PROJECT.replace("${LD_ACCESS_TOKEN}", "${NOT_SET_ANYWHERE}");
    let found = problems(&config, &[]);
    assert_eq!(found.len(), 1);
    assert!(
        found[0]
            .starts_with("ldsync.toml:5:10: environment variable `NOT_SET_ANYWHERE` is not set"),
        "{found:#?}"
    );
}

#[test]
fn several_bad_entries_of_the_project_file_are_each_reported() {
    let config = r#"[warehouses.a]
duckdb = ""

[warehouses.b]
postgres = "postgres://app:hunter2@db/x"

[environments.e]
token = "api-literal"
project = "bad project"
environment = "production"
api_url = "ftp://x"
"#;
    let found = problems(config, &[]);
    assert_eq!(found.len(), 5, "{found:#?}");
    assert!(found[0].starts_with("ldsync.toml:2:10: empty `duckdb` path"), "{found:#?}");
    assert!(found[1].starts_with("ldsync.toml:5:12: `postgres` holds a secret"), "{found:#?}");
    assert!(found[2].starts_with("ldsync.toml:8:9: `token` holds a secret"), "{found:#?}");
    assert!(found[3].starts_with("ldsync.toml:9:11: invalid project key `bad project`"));
    assert!(found[4].starts_with("ldsync.toml:11:11: invalid `api_url`"), "{found:#?}");
}

#[test]
fn secrets_never_reach_a_problem() {
    let config = PROJECT.replace("project = \"default\"", "project = \"${LD_ACCESS_TOKEN} x\"");
    let found = problems(&config, &[]);
    assert!(!found.iter().any(|p| p.contains("api-test-token")), "{found:#?}");
}

#[test]
fn a_shared_state_store_takes_a_cache_and_a_lease() {
    let config = format!(
        "[state]\nurl = \"${{LDSYNC_STATE_URL}}\"\ncache = \"work\"\nlease = \"15s\"\n\n{PROJECT}"
    );
    let dir = project(&config, &[]);
    let loaded = load_with(&dir.path().join("ldsync.toml"), &example_env()).unwrap();
    let ldsync_config::StateSpec::Postgres { url, cache, lease } = loaded.state else {
        panic!("expected the PostgreSQL store, got {:?}", loaded.state)
    };
    assert_eq!(url.expose(), "postgres://ldsync@127.0.0.1/state");
    assert_eq!(cache, dir.path().join("work"));
    assert_eq!(lease, std::time::Duration::from_secs(15));

    let found = problems(&format!("[state]\npath = \"s\"\nlease = \"15s\"\n\n{PROJECT}"), &[]);
    assert_eq!(
        found,
        ["ldsync.toml:3:9: `[state] lease` applies to a PostgreSQL state store (`url`) only"]
    );
    let found = problems(
        &format!("[state]\nurl = \"${{LDSYNC_STATE_URL}}\"\nlease = \"100ms\"\n\n{PROJECT}"),
        &[],
    );
    assert_eq!(
        found,
        ["ldsync.toml:3:9: state `lease` must be at least 1s: it is renewed every third of it"]
    );
}

#[test]
fn a_pace_of_zero_requests_is_refused() {
    let found = problems(&format!("[limits]\nroute_requests_per_second = 0\n\n{PROJECT}"), &[]);
    assert_eq!(found, ["ldsync.toml:2:29: `route_requests_per_second` must be at least 1"]);
}
