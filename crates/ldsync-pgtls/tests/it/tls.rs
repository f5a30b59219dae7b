//! TLS against a throwaway PostgreSQL with `ssl = on` and certificates from a test authority.
//!
//! Issue 8 asks that TLS to PostgreSQL be tested with a self-signed certificate: `verify-full`
//! succeeds with the authority and fails without it.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::OnceLock;

use ldsync_pgtls::{Error, SslMode};
use ldsync_test_support::{PostgresServer, ServerTls};
use tempfile::TempDir;
use tokio_postgres::error::SqlState;

use crate::certs::Authority;

/// The servers and files shared by the tests of this module.
struct Fixture {
    /// Certificate for `localhost` and 127.0.0.1; plain TCP refused.
    server: PostgresServer,
    /// Certificate for another name only, from the same authority; plain TCP allowed.
    misnamed: PostgresServer,
    /// The authority that signed both servers' certificates.
    ca: PathBuf,
    /// An authority that signed nothing here.
    other_ca: PathBuf,
    _dir: TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let authority = Authority::new("ldsync test authority");
        let (cert_pem, key_pem) = authority.issue(&["localhost"], &[Ipv4Addr::LOCALHOST]);
        let server =
            PostgresServer::start_with_tls(&ServerTls { cert_pem, key_pem, tls_only: true })
                .unwrap();
        let (cert_pem, key_pem) = authority.issue(&["db.example.test"], &[]);
        let misnamed =
            PostgresServer::start_with_tls(&ServerTls { cert_pem, key_pem, tls_only: false })
                .unwrap();
        Fixture {
            ca: authority.write(dir.path(), "ca.pem"),
            other_ca: Authority::new("another authority").write(dir.path(), "other-ca.pem"),
            server,
            misnamed,
            _dir: dir,
        }
    })
}

/// The URL of `server` at `host` (always reached at 127.0.0.1) with the given query.
fn url(server: &PostgresServer, host: &str, query: &str) -> String {
    format!("postgres://postgres@{host}:{}/postgres?hostaddr=127.0.0.1&{query}", server.port())
}

/// Connects and returns whether the session is encrypted, as the server sees it.
async fn connect_and_check(conn: &str) -> Result<bool, tokio_postgres::Error> {
    let connect = ldsync_pgtls::parse(conn).unwrap();
    let (client, connection) = connect.connect().await?;
    tokio::spawn(connection);
    let row =
        client.query_one("select ssl from pg_stat_ssl where pid = pg_backend_pid()", &[]).await?;
    Ok(row.get(0))
}

/// Connects where it must fail, and returns the error with its causes, as
/// `ldsync-source` prints it: tokio-postgres keeps the TLS reason in `source()`.
async fn connect_error(conn: &str) -> String {
    let error = match connect_and_check(conn).await {
        Ok(ssl) => panic!("connected (ssl = {ssl}) where it must fail: {conn}"),
        Err(error) => error,
    };
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

#[tokio::test]
async fn verify_full_with_the_authority_succeeds_by_ip_and_by_name() {
    let fixture = fixture();
    let ca = fixture.ca.display();
    for host in ["127.0.0.1", "localhost"] {
        let conn = url(&fixture.server, host, &format!("sslmode=verify-full&sslrootcert={ca}"));
        assert!(connect_and_check(&conn).await.unwrap(), "{host}");
    }
    let conn = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user=postgres sslmode=verify-full \
         sslrootcert='{ca}'",
        fixture.server.port()
    );
    assert!(connect_and_check(&conn).await.unwrap());
}

#[tokio::test]
async fn verify_full_with_another_authority_fails_on_the_certificate() {
    let fixture = fixture();
    let other = fixture.other_ca.display();
    for mode in ["verify-full", "verify-ca", "require"] {
        let conn =
            url(&fixture.server, "127.0.0.1", &format!("sslmode={mode}&sslrootcert={other}"));
        let message = connect_error(&conn).await;
        assert!(message.contains("error performing TLS handshake"), "{mode}: {message}");
        assert!(message.contains("invalid peer certificate: UnknownIssuer"), "{mode}: {message}");
    }
}

#[tokio::test]
async fn verify_full_without_an_authority_is_refused_before_connecting() {
    let fixture = fixture();
    let home_root =
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".postgresql/root.crt"));
    if home_root.as_ref().is_some_and(|path| path.exists()) {
        eprintln!("skipped: `~/.postgresql/root.crt` exists on this machine");
        return;
    }
    let error =
        ldsync_pgtls::parse(&url(&fixture.server, "127.0.0.1", "sslmode=verify-full")).unwrap_err();
    assert!(matches!(error, Error::MissingRootCert { mode: SslMode::VerifyFull, .. }), "{error}");
    assert!(error.to_string().contains(".postgresql/root.crt"), "{error}");
}

#[tokio::test]
async fn verify_full_fails_on_a_host_name_the_certificate_does_not_name() {
    let fixture = fixture();
    let ca = fixture.ca.display();
    for host in ["localhost", "127.0.0.1"] {
        let conn = url(&fixture.misnamed, host, &format!("sslmode=verify-full&sslrootcert={ca}"));
        let message = connect_error(&conn).await;
        assert!(message.contains("invalid peer certificate"), "{host}: {message}");
        assert!(message.contains("not valid for name"), "{host}: {message}");
        assert!(message.contains(host), "{host}: {message}");
    }
    // verify-ca checks the chain only, so the same certificate passes.
    let conn = url(&fixture.misnamed, "localhost", &format!("sslmode=verify-ca&sslrootcert={ca}"));
    assert!(connect_and_check(&conn).await.unwrap());
}

#[tokio::test]
async fn require_succeeds_without_an_authority() {
    let fixture = fixture();
    for server in [&fixture.server, &fixture.misnamed] {
        assert!(connect_and_check(&url(server, "localhost", "sslmode=require")).await.unwrap());
    }
    // With the right authority, require checks the chain and still passes.
    let ca = fixture.ca.display();
    let conn = url(&fixture.misnamed, "localhost", &format!("sslmode=require&sslrootcert={ca}"));
    assert!(connect_and_check(&conn).await.unwrap());
}

#[tokio::test]
async fn disable_fails_where_only_tls_is_allowed() {
    let fixture = fixture();
    let conn = url(&fixture.server, "127.0.0.1", "sslmode=disable");
    let connect = ldsync_pgtls::parse(&conn).unwrap();
    let error = connect.connect().await.err().expect("a plain connection must be refused");
    let db_error = error.as_db_error().expect("the server refuses it");
    assert_eq!(db_error.code(), &SqlState::INVALID_AUTHORIZATION_SPECIFICATION, "{db_error}");
    assert!(db_error.message().contains("no encryption"), "{db_error}");
    // Where plain TCP is allowed, disable connects without TLS.
    assert!(!connect_and_check(&url(&fixture.misnamed, "127.0.0.1", "sslmode=disable"))
        .await
        .unwrap());
}

#[tokio::test]
async fn prefer_connects_with_tls() {
    let fixture = fixture();
    for server in [&fixture.server, &fixture.misnamed] {
        assert!(connect_and_check(&url(server, "127.0.0.1", "sslmode=prefer")).await.unwrap());
    }
    // Prefer is the default.
    let conn = format!("postgres://postgres@127.0.0.1:{}/postgres", fixture.server.port());
    assert!(connect_and_check(&conn).await.unwrap());
}

#[tokio::test]
async fn prefer_falls_back_to_plain_when_the_server_has_no_tls() {
    let server = ldsync_test_support::postgres::shared();
    assert!(!connect_and_check(&url(server, "127.0.0.1", "sslmode=prefer")).await.unwrap());
    let error = connect_error(&url(server, "127.0.0.1", "sslmode=require")).await;
    assert!(error.contains("server does not support TLS"), "{error}");
}

#[tokio::test]
async fn the_fixture_helpers_still_work_on_a_tls_only_server() {
    let fixture = fixture();
    let db = fixture.server.create_unique_database("tls").await.unwrap();
    let ca = fixture.ca.display();
    let conn = format!(
        "postgres://postgres@localhost:{}/{db}?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}",
        fixture.server.port()
    );
    assert!(connect_and_check(&conn).await.unwrap());
}

/// Sends `select 41 + 1` as a simple query over a session taken back from tokio-postgres, and
/// reads the answer off the socket.
async fn over_a_detached_session(conn: &str) -> (bool, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connect = ldsync_pgtls::parse(conn).unwrap();
    assert!(connect.can_detach());
    let (client, detachable) = connect.connect_detachable().await.unwrap();
    let (ssl, mut stream) = detachable
        .drive(async {
            let row = client
                .query_one("select ssl from pg_stat_ssl where pid = pg_backend_pid()", &[])
                .await?;
            Ok(row.get::<_, bool>(0))
        })
        .await
        .unwrap();
    drop(client);
    let sql = b"select 41 + 1 as answer\0";
    let mut query = vec![b'Q'];
    query.extend_from_slice(&u32::try_from(sql.len() + 4).unwrap().to_be_bytes());
    query.extend_from_slice(sql);
    stream.write_all(&query).await.unwrap();
    let mut read = Vec::new();
    // RowDescription, DataRow, CommandComplete, ReadyForQuery: the data row holds `42`.
    while !read.ends_with(b"Z\0\0\0\x05I") {
        let mut buf = [0; 1024];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "the server closed the session");
        read.extend_from_slice(&buf[..n]);
    }
    let data = read.iter().position(|&b| b == b'D').unwrap();
    let answer = String::from_utf8_lossy(&read[data + 11..data + 13]).into_owned();
    (ssl, answer)
}

#[tokio::test]
async fn a_detached_session_speaks_on_after_tls_and_after_plain_startup() {
    let fixture = fixture();
    let ca = fixture.ca.display();
    let tls = url(&fixture.server, "localhost", &format!("sslmode=verify-full&sslrootcert={ca}"));
    assert_eq!(over_a_detached_session(&tls).await, (true, "42".to_owned()));
    let plain = url(ldsync_test_support::postgres::shared(), "127.0.0.1", "sslmode=prefer");
    assert_eq!(over_a_detached_session(&plain).await, (false, "42".to_owned()));
    // What detaching does not handle is said, for the caller to connect the usual way.
    let attrs = ldsync_pgtls::parse(&format!("{plain}&target_session_attrs=read-write")).unwrap();
    assert!(!attrs.can_detach());
}

#[tokio::test]
async fn a_detached_session_reports_a_host_it_cannot_reach() {
    // A privileged port nothing listens on (a free port could be taken meanwhile by a server
    // another test starts).
    let closed = 1;
    let conn = format!("postgres://postgres@127.0.0.1:{closed}/postgres?connect_timeout=2");
    let error = ldsync_pgtls::parse(&conn).unwrap().connect_detachable().await.unwrap_err();
    assert!(error.to_string().contains(&format!("127.0.0.1:{closed}")), "{error}");
}
