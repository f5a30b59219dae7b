//! Every example we ship, and every example in PRODUCT.md, loads unchanged.

use ldsync_config::{load_from_texts, load_with, StateSpec, SyncObject, WarehouseSpec};

use crate::{example_env, repo_root};

#[test]
fn the_bundled_project_and_syncs_validate() {
    let project = load_with(&repo_root().join("ldsync.toml"), &example_env()).unwrap();
    let names: Vec<_> = project.syncs.keys().map(ToString::to_string).collect();
    assert_eq!(names, ["beta-testers", "checkouts", "metric-definitions"]);

    let beta = &project.syncs["beta-testers"];
    let SyncObject::Segment(segment) = &beta.object else { panic!("beta-testers is a segment") };
    assert_eq!(segment.key.as_ref().unwrap().as_str(), "beta-testers");
    assert_eq!(segment.context_kind.as_str(), "user");
    assert!((segment.max_removal_ratio.get() - 0.25).abs() < f64::EPSILON);
    assert_eq!(beta.schedule.as_ref().unwrap().as_str(), "*/15 * * * *");

    let SyncObject::MetricEvents(events) = &project.syncs["checkouts"].object else {
        panic!("checkouts sends metric events")
    };
    assert_eq!(events.lookback.as_secs(), 6 * 3600);
    assert!(events.query.binds(1));

    assert!(matches!(project.syncs["metric-definitions"].object, SyncObject::Metrics(_)));
    assert!(matches!(project.state, StateSpec::Local { ref path } if path.ends_with(".ldsync")));
    let warehouses: Vec<_> = project.warehouses.values().map(WarehouseSpec::kind).collect();
    assert_eq!(warehouses, ["postgres", "duckdb"]);
    let production = project.environments.values().next().unwrap();
    assert_eq!(production.token.expose(), "api-test-token");
    assert_eq!(format!("{:?}", production.token), "**REDACTED**");
    assert_eq!(production.api_url, "https://app.launchdarkly.com");
}

/// The files given as text load as they do from disk: the fuzz target `config_project` relies on it.
#[test]
fn the_bundled_project_loads_the_same_from_text() {
    let path = repo_root().join("ldsync.toml");
    let from_disk = load_with(&path, &example_env()).unwrap();
    let mut syncs: Vec<_> = std::fs::read_dir(repo_root().join("syncs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .map(|path| (path.clone(), std::fs::read_to_string(path).unwrap()))
        .collect();
    syncs.sort();
    let text = std::fs::read_to_string(&path).unwrap();
    let from_text = load_from_texts(&path, &text, &syncs, &example_env()).unwrap();
    assert_eq!(format!("{from_text:?}"), format!("{from_disk:?}"));

    syncs.push((repo_root().join("syncs/broken.toml"), "warehouse = 1\n".to_owned()));
    let error = load_from_texts(&path, &text, &syncs, &example_env()).unwrap_err();
    assert!(error.to_string().contains("broken.toml:1:13"), "{error}");
}

/// The TOML blocks of PRODUCT.md, which the bundled files must equal byte for byte.
#[test]
fn product_examples_are_the_bundled_files() {
    let product = repo_root().join("../shared/PRODUCT.md");
    let Ok(text) = std::fs::read_to_string(&product) else {
        eprintln!("note: {} is not beside the repository; compared nothing", product.display());
        return;
    };
    let mut compared = 0;
    for block in text.split("```toml\n").skip(1) {
        let block = &block[..block.find("```").unwrap()];
        let first = block.lines().next().unwrap();
        let name = first.trim_start_matches("# ").split_whitespace().next().unwrap();
        let bundled = std::fs::read_to_string(repo_root().join(name)).unwrap();
        assert_eq!(bundled, block, "{name} differs from PRODUCT.md");
        compared += 1;
    }
    assert_eq!(compared, 4);
}

#[test]
fn the_reference_sync_sets_every_option_and_validates() {
    let dir = crate::project(
        &std::fs::read_to_string(repo_root().join("docs/reference/ldsync.toml")).unwrap(),
        &[(
            "reference.toml",
            &std::fs::read_to_string(repo_root().join("docs/reference/sync.toml")).unwrap(),
        )],
    );
    let project = load_with(&dir.path().join("ldsync.toml"), &example_env()).unwrap();
    let sync = &project.syncs["reference"];
    let SyncObject::Segment(segment) = &sync.object else { panic!("the reference is a segment") };
    assert_eq!(segment.batch_size, 500);
    assert_eq!(segment.tags, ["warehouse-sync"]);
    assert!(matches!(project.state, StateSpec::Local { .. }));
    assert_eq!(project.limits.max_concurrent_syncs, 2);
    assert_eq!(
        (project.limits.requests_per_second, project.limits.route_requests_per_second),
        (50, 20)
    );
}
