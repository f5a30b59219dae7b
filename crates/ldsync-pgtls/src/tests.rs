use std::fs;

use tokio_postgres::config::Host;

use super::*;

/// A password that no error may show.
const PASSWORD: &str = "s3cr3t-hunter2";

fn write_ca(dir: &Path) -> PathBuf {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let path = dir.join("ca.pem");
    fs::write(&path, params.self_signed(&key).unwrap().pem()).unwrap();
    path
}

#[test]
fn url_form_keeps_the_rest_of_the_configuration() {
    let connect = parse_with_home(
        &format!("postgres://reader:{PASSWORD}@db.example.com:6543/analytics?sslmode=require&application_name=ldsync"),
        None,
    )
    .unwrap();
    assert_eq!(connect.ssl_mode, SslMode::Require);
    assert_eq!(connect.config.get_hosts(), [Host::Tcp("db.example.com".into())]);
    assert_eq!(connect.config.get_ports(), [6543]);
    assert_eq!(connect.config.get_user(), Some("reader"));
    assert_eq!(connect.config.get_password(), Some(PASSWORD.as_bytes()));
    assert_eq!(connect.config.get_dbname(), Some("analytics"));
    assert_eq!(connect.config.get_application_name(), Some("ldsync"));
    assert_eq!(connect.config.get_ssl_mode(), PgSslMode::Require);
}

#[test]
fn key_value_form_keeps_the_rest_of_the_configuration() {
    let connect = parse_with_home(
        &format!("host=db.example.com port=6543 user=reader password='{PASSWORD}' sslmode=disable dbname=analytics"),
        None,
    )
    .unwrap();
    assert_eq!(connect.ssl_mode, SslMode::Disable);
    assert_eq!(connect.config.get_hosts(), [Host::Tcp("db.example.com".into())]);
    assert_eq!(connect.config.get_password(), Some(PASSWORD.as_bytes()));
    assert_eq!(connect.config.get_dbname(), Some("analytics"));
    assert_eq!(connect.config.get_ssl_mode(), PgSslMode::Disable);
}

#[test]
fn prefer_is_the_default() {
    for conn in ["postgres://h/db", "host=h dbname=db"] {
        let connect = parse_with_home(conn, None).unwrap();
        assert_eq!(connect.ssl_mode, SslMode::Prefer);
        assert_eq!(connect.config.get_ssl_mode(), PgSslMode::Prefer);
    }
}

#[test]
fn every_mode_parses_and_negotiates_as_tokio_postgres_needs() {
    let dir = tempfile::tempdir().unwrap();
    let ca = write_ca(dir.path());
    let ca = ca.to_str().unwrap();
    let cases = [
        ("disable", SslMode::Disable, PgSslMode::Disable),
        ("prefer", SslMode::Prefer, PgSslMode::Prefer),
        ("require", SslMode::Require, PgSslMode::Require),
        ("verify-ca", SslMode::VerifyCa, PgSslMode::Require),
        ("verify-full", SslMode::VerifyFull, PgSslMode::Require),
    ];
    for (name, mode, negotiated) in cases {
        for conn in [
            format!("postgres://h/db?sslmode={name}&sslrootcert={ca}"),
            format!("host=h sslmode={name} sslrootcert='{ca}'"),
        ] {
            let connect = parse_with_home(&conn, None).unwrap();
            assert_eq!(connect.ssl_mode, mode, "{conn}");
            assert_eq!(connect.config.get_ssl_mode(), negotiated, "{conn}");
            assert_eq!(mode.to_string(), name);
        }
    }
}

#[test]
fn verify_modes_use_the_default_root_file_when_it_exists() {
    let home = tempfile::tempdir().unwrap();
    fs::create_dir(home.path().join(".postgresql")).unwrap();
    let ca = write_ca(home.path());
    fs::rename(ca, home.path().join(".postgresql/root.crt")).unwrap();
    let connect = parse_with_home("host=h sslmode=verify-full", Some(home.path())).unwrap();
    assert_eq!(connect.ssl_mode, SslMode::VerifyFull);
}

#[test]
fn system_roots_default_to_verify_full() {
    let connect = parse_with_home("postgres://h/db?sslrootcert=system", None).unwrap();
    assert_eq!(connect.ssl_mode, SslMode::VerifyFull);
}

#[test]
fn unknown_sslmode_is_refused_by_name() {
    let error = parse_with_home("postgres://h/db?sslmode=verify_full", None).unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid `sslmode` `verify_full`: use `disable`, `prefer`, `require`, `verify-ca` or \
         `verify-full`"
    );
    let error = parse_with_home("host=h sslmode=allow", None).unwrap_err();
    assert!(matches!(error, Error::AllowNotSupported), "{error}");
}

#[test]
fn errors_never_show_the_password_or_the_connection_string() {
    let home = tempfile::tempdir().unwrap();
    let bad = [
        format!("postgres://u:{PASSWORD}@h/db?sslmode=bogus"),
        format!("postgres://u:{PASSWORD}@h/db?sslmode=verify-full"),
        format!("postgres://u:{PASSWORD}@h/db?sslcert=/c.pem"),
        format!("postgres://u:{PASSWORD}@h/db?sslrootcert=/missing.pem&sslmode=verify-ca"),
        format!("postgres://u:{PASSWORD}@h:notaport/db"),
        format!("postgres://u:{PASSWORD}@h/db?unknown=1"),
        format!("postgres://u:{PASSWORD}@h/db?sslrootcert=system&sslmode=require"),
        format!("host=h password={PASSWORD} sslmode=bogus"),
        format!("host=h password='{PASSWORD}"),
        format!("host=h password={PASSWORD} port=x"),
        format!("host=h password={PASSWORD} sslkey=/k.pem"),
        format!("host=h password={PASSWORD} sslmode=verify-ca"),
    ];
    for conn in bad {
        let error = parse_with_home(&conn, Some(home.path())).unwrap_err();
        let mut shown = format!("{error} {error:?}");
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            shown.push_str(&cause.to_string());
            source = cause.source();
        }
        assert!(!shown.contains(PASSWORD), "{shown}");
        assert!(!shown.contains("h/db"), "{shown}");
    }
}

#[test]
fn debug_output_hides_the_password() {
    let connect = parse_with_home(&format!("postgres://u:{PASSWORD}@h/db"), None).unwrap();
    let shown = format!("{connect:?}");
    assert!(!shown.contains(PASSWORD), "{shown}");
}

#[test]
fn invalid_rest_names_the_option() {
    let error = parse_with_home("postgres://h/db?sslmode=require&unknown=1", None).unwrap_err();
    assert_eq!(error.to_string(), "invalid connection string: unknown option `unknown`");
}
