//! `ldsync validate`: the bundled examples pass, and every invalid fixture fails with exit 78
//! and its message at its `path:line:column`.

use std::{fs, path::Path};

use crate::{copy_tree, describe, ldsync, repo_root};

/// The variables the examples and fixtures name.
const VARS: &[(&str, &str)] = &[
    ("WAREHOUSE_URL", "postgres://app@127.0.0.1:1/analytics"),
    ("LD_ACCESS_TOKEN", "api-fixture-token-4242"),
];

#[test]
fn the_bundled_syncs_validate() {
    let output = ldsync(&repo_root(), VARS).args(["validate"]).output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("sync `beta-testers`: segment from `analytics` to `production`"),
        "{stdout}"
    );
    assert!(stdout.contains("ldsync.toml: valid, 3 syncs"), "{stdout}");
}

#[test]
fn the_bundled_syncs_validate_as_json() {
    let output =
        ldsync(&repo_root(), VARS).args(["validate", "--output", "json"]).output().unwrap();
    assert!(output.status.success(), "{}", describe(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["valid"], true);
    assert_eq!(report["syncs"].as_array().unwrap().len(), 3);
    assert_eq!(report["syncs"][1]["object"], "metric_events");
}

#[test]
fn the_config_flag_and_variable_name_the_project() {
    let elsewhere = tempfile::tempdir().unwrap();
    let config = repo_root().join("ldsync.toml");
    let flag = ldsync(elsewhere.path(), VARS)
        .args(["--config", config.to_str().unwrap(), "validate"])
        .output()
        .unwrap();
    assert!(flag.status.success(), "{}", describe(&flag));
    let mut vars = VARS.to_vec();
    vars.push(("LDSYNC_CONFIG", config.to_str().unwrap()));
    let variable = ldsync(elsewhere.path(), &vars).args(["validate"]).output().unwrap();
    assert!(variable.status.success(), "{}", describe(&variable));
    let missing = ldsync(elsewhere.path(), VARS).args(["validate"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(78), "{}", describe(&missing));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("ldsync.toml:1:1: cannot read `ldsync.toml`"), "{stderr}");
}

/// Lays out one fixture as a project in `dir` and returns the message it expects.
fn lay_out(fixture: &Path, dir: &Path) -> String {
    let fixtures = fixture.parent().unwrap();
    let header_file = if fixture.is_dir() {
        copy_tree(fixture, dir);
        dir.join("ldsync.toml")
    } else {
        fs::copy(fixtures.join("base/ldsync.toml"), dir.join("ldsync.toml")).unwrap();
        fs::create_dir_all(dir.join("syncs")).unwrap();
        let target = dir.join("syncs").join(fixture.file_name().unwrap());
        fs::copy(fixture, &target).unwrap();
        target
    };
    let text = fs::read_to_string(header_file).unwrap();
    let header = text.lines().next().unwrap_or_default();
    header
        .strip_prefix("# error: ")
        .unwrap_or_else(|| panic!("{} must start with `# error: <message>`", fixture.display()))
        .to_owned()
}

#[test]
fn every_invalid_fixture_exits_78_with_its_message() {
    let fixtures = repo_root().join("tests/fixtures/invalid");
    let mut cases: Vec<_> = fs::read_dir(&fixtures)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.file_name().unwrap() != "base")
        .collect();
    cases.sort();
    assert!(cases.len() >= 25, "only {} invalid fixtures", cases.len());
    let mut failures = Vec::new();
    for case in &cases {
        let dir = tempfile::tempdir().unwrap();
        let expected = lay_out(case, dir.path());
        let output = ldsync(dir.path(), VARS).args(["validate"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let found = stderr.lines().any(|line| line.starts_with(expected.trim_end()));
        if output.status.code() != Some(78) || !found {
            failures.push(format!(
                "{}: expected `{expected}`\n{}",
                case.display(),
                describe(&output)
            ));
        }
        // The token is never printed, whatever the problem.
        assert!(!stderr.contains("api-fixture-token-4242"), "{}", describe(&output));
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn problems_are_reported_as_json_too() {
    let dir = tempfile::tempdir().unwrap();
    lay_out(&repo_root().join("tests/fixtures/invalid/bad-cron.toml"), dir.path());
    let output = ldsync(dir.path(), VARS).args(["validate", "--output", "json"]).output().unwrap();
    assert_eq!(output.status.code(), Some(78), "{}", describe(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["valid"], false);
    let problem = &report["problems"][0];
    assert_eq!(problem["path"], "syncs/bad-cron.toml");
    assert_eq!(problem["line"], 4);
    assert_eq!(problem["column"], 12);
    assert_eq!(problem["sync"], "bad-cron");
    assert!(problem["message"].as_str().unwrap().starts_with("invalid cron expression"));
}

#[tokio::test]
async fn the_emulator_flags_reach_the_emulator() {
    let port = ldsync_test_support::free_port().unwrap();
    let mut child = ldsync(&repo_root(), &[])
        .args([
            "emulator",
            "--port",
            &port.to_string(),
            "--token",
            "full-token",
            "--limited-token",
            "reader=getSegment",
            "--project",
            "acme=prod",
            "--import-delay",
            "50ms",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    assert_eq!(first.trim(), format!("api_url: http://127.0.0.1:{port}"));
    // The limited token may read but not create; the project given exists, the default not.
    #[expect(clippy::disallowed_methods, reason = "the test plays a person calling the emulator")]
    let http = reqwest::Client::new();
    let create = |path: &'static str, token: &'static str| {
        http.post(format!("http://127.0.0.1:{port}{path}"))
            .header("Authorization", token)
            .json(&serde_json::json!({"key": "b", "name": "B"}))
            .send()
    };
    assert_eq!(create("/api/v2/segments/acme/prod", "reader").await.unwrap().status(), 403);
    assert_eq!(create("/api/v2/segments/acme/prod", "full-token").await.unwrap().status(), 201);
    let missing = create("/api/v2/segments/default/production", "full-token").await.unwrap();
    assert_eq!(missing.status(), 404);
    child.kill().unwrap();
    child.wait().unwrap();
}
