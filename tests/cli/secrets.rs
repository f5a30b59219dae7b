//! Secrets stay secret: every command runs with a recognisable token and database password,
//! and neither appears in any output, log line, plan, report or state file.

use std::{os::unix::fs::PermissionsExt, path::Path};

use ldsync_emulator::{Emulator, EmulatorConfig};

use crate::ldsync;

const TOKEN: &str = "api-SECRET-TOKEN-5f9e2d";
const PASSWORD: &str = "pw-SECRET-PASSWORD-81c3";

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(files(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread")]
async fn no_command_prints_or_stores_a_secret() {
    let server = ldsync_test_support::postgres::shared();
    let db = server.create_unique_database("secrets").await.unwrap();
    let client = server.connect_to(&db).await.unwrap();
    client
        .batch_execute(
            "create table users (id text); insert into users select 'u' || i from generate_series(1, 50) i;
             create table orders (id text, user_id text, placed_at timestamptz);
             insert into orders select 'o' || i, 'u' || i, now() - i * interval '1 minute' from generate_series(1, 20) i;
             create table defs (key text, name text, event_key text, is_numeric boolean);
             insert into defs values ('m1', 'M1', 'e1', false);",
        )
        .await
        .unwrap();
    let emulator = Emulator::start(EmulatorConfig::default().with_token(TOKEN)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("postgres://postgres:{PASSWORD}@127.0.0.1:{}/{db}", server.port());
    std::fs::write(
        dir.path().join("ldsync.toml"),
        format!(
            "[warehouses.pg]\npostgres = \"${{WAREHOUSE_URL}}\"\n[environments.e]\ntoken = \"${{LD_ACCESS_TOKEN}}\"\nproject = \"default\"\nenvironment = \"production\"\napi_url = \"{}\"\nevents_url = \"{}\"\n",
            emulator.api_url(),
            emulator.events_url()
        ),
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("syncs")).unwrap();
    let sync = |name: &str, body: &str| {
        std::fs::write(
            dir.path().join(format!("syncs/{name}.toml")),
            format!("warehouse = \"pg\"\nenvironment = \"e\"\n{body}"),
        )
        .unwrap();
    };
    sync(
        "members",
        "[segment]\nkey = \"members\"\nquery = \"select id as context_key from users\"\n",
    );
    sync("orders", "[metric_events]\nquery = \"select id as event_id, 'order' as event_key, user_id as context_key, placed_at as occurred_at from orders where placed_at >= $1\"\n");
    sync(
        "definitions",
        "[metrics]\nquery = \"select key, name, event_key, is_numeric from defs\"\n",
    );

    let vars = [("LD_ACCESS_TOKEN", TOKEN), ("WAREHOUSE_URL", url.as_str())];
    let commands: &[&[&str]] = &[
        &["validate"],
        &["validate", "--check-connections"],
        &["validate", "--output", "json"],
        &["plan"],
        &["plan", "--output", "json"],
        &["--log-format", "json", "run"],
        &["run", "--output", "json"],
        &["status", "--rejected"],
        &["status", "--output", "json"],
        &["backfill", "members"],
        &["backfill", "orders", "--from", "2020-01-01", "--to", "2030-01-01", "--window", "3650d"],
    ];
    let mut outputs = Vec::new();
    for args in commands {
        let output =
            ldsync(dir.path(), &vars).env("LDSYNC_LOG", "debug").args(*args).output().unwrap();
        outputs.push((args.join(" "), output));
    }
    // The same with a wrong token and an unreachable database: errors must not quote them.
    let bad_url = url.replace(&server.port().to_string(), "1");
    let bad = [("LD_ACCESS_TOKEN", TOKEN), ("WAREHOUSE_URL", bad_url.as_str())];
    let output =
        ldsync(dir.path(), &bad).args(["validate", "--check-connections"]).output().unwrap();
    outputs.push(("validate --check-connections (unreachable)".into(), output));
    let output = ldsync(dir.path(), &bad).args(["run"]).output().unwrap();
    outputs.push(("run (unreachable)".into(), output));

    for (command, output) in &outputs {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        for secret in [TOKEN, PASSWORD] {
            assert!(!text.contains(secret), "`ldsync {command}` printed a secret:\n{text}");
        }
    }
    assert!(outputs.iter().any(|(_, o)| !o.stdout.is_empty()), "the commands printed something");
    let state = dir.path().join(".ldsync");
    let state_files = files(&state);
    assert!(state_files.len() > 5, "{state_files:?}");
    for path in state_files {
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for secret in [TOKEN, PASSWORD] {
            assert!(!text.contains(secret), "{} holds a secret", path.display());
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o077;
        assert_eq!(mode, 0, "{} is readable by others", path.display());
    }
    assert_folders_are_private(&state);
    assert_only_the_authorization_header_holds_the_token(&emulator);
}

/// Every folder under `state`, itself included, is closed to others.
fn assert_folders_are_private(state: &Path) {
    let mut folders = vec![state.to_path_buf()];
    while let Some(folder) = folders.pop() {
        let mode = std::fs::metadata(&folder).unwrap().permissions().mode() & 0o077;
        assert_eq!(mode, 0, "{} is open to others", folder.display());
        for entry in std::fs::read_dir(&folder).unwrap().flatten() {
            if entry.path().is_dir() {
                folders.push(entry.path());
            }
        }
    }
}

/// What LaunchDarkly received: the token in the `Authorization` header and nowhere else, the
/// password nowhere.
fn assert_only_the_authorization_header_holds_the_token(emulator: &Emulator) {
    let requests = emulator.request_log();
    assert!(requests.len() > 5, "{} requests", requests.len());
    for request in &requests {
        let (method, uri) = (&request.method, &request.uri);
        let body = String::from_utf8_lossy(&request.body);
        for secret in [TOKEN, PASSWORD] {
            assert!(!uri.contains(secret), "{method} {uri} carries a secret");
            assert!(!body.contains(secret), "the body of {method} {uri} carries a secret");
            for (name, value) in &request.headers {
                if name == "authorization" && secret == TOKEN {
                    assert_eq!(value.trim(), TOKEN, "{method} {uri}");
                } else {
                    assert!(
                        !value.contains(secret),
                        "header {name} of {method} {uri} carries a secret"
                    );
                }
            }
        }
    }
}

#[test]
fn serve_and_the_emulator_listen_on_loopback_unless_told_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    for (command, default) in
        [("serve", "[default: 127.0.0.1:9184]"), ("emulator", "[default: 127.0.0.1]")]
    {
        let output = ldsync(dir.path(), &[]).args([command, "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(
            help.contains(default),
            "`ldsync {command} --help` does not default to loopback:\n{help}"
        );
    }
}
