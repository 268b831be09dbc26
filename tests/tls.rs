//! HTTPS and WSS (issue 20, point 5): a hub given `--tls-cert`/`--tls-key`
//! with a certificate made here by rcgen (a CA of the test's and a
//! certificate it signed for 127.0.0.1 and localhost), read and written by
//! real clients trusting that CA: reqwest, tokio-tungstenite, `agentpulse
//! tail` and the Python SDK. The connection limits apply over TLS too.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, python, wait_for, Hub};
use futures_util::StreamExt;
use serde_json::{json, Value};

const T: Duration = Duration::from_secs(20);

/// A test CA and a certificate it signed for the hub, as PEM files.
struct Pki {
    dir: tempfile::TempDir,
    ca: Option<PathBuf>,
}

impl Pki {
    /// Only the CA file of another `Pki`, to make clients with.
    fn trusting(ca: PathBuf) -> Pki {
        Pki {
            dir: tempfile::tempdir().unwrap(),
            ca: Some(ca),
        }
    }

    fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        };
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "agentpulse test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let mut leaf =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        leaf.use_authority_key_identifier_extension = true;
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), key.serialize_pem()).unwrap();
        Pki { dir, ca: None }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn ca(&self) -> PathBuf {
        self.ca.clone().unwrap_or_else(|| self.path("ca.pem"))
    }

    /// `serve` arguments for HTTPS with this certificate, plus `extra`.
    fn hub(&self, log_dir: &Path, extra: &[&str]) -> Hub {
        let cert = self.path("cert.pem");
        let key = self.path("key.pem");
        let mut args = vec![
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let hub = Hub::start(log_dir, &args);
        assert_eq!(hub.scheme, "https", "the listening line says https");
        hub
    }

    /// A blocking reqwest client trusting only the test CA.
    fn client(&self) -> reqwest::blocking::Client {
        common::rustls_provider();
        let pem = std::fs::read(self.ca()).unwrap();
        reqwest::blocking::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&pem).unwrap()])
            .timeout(T)
            .build()
            .unwrap()
    }
}

fn note(i: u64) -> Value {
    json!({"event_type": "note", "payload": {"i": i}})
}

fn post_to(client: &reqwest::blocking::Client, url: &str, body: &Value) -> u16 {
    let resp = client
        .post(url)
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    resp.status().as_u16()
}

fn post(client: &reqwest::blocking::Client, hub: &Hub, body: &Value) -> (u16, Value) {
    let resp = client
        .post(hub.url("/events"))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .unwrap();
    (resp.status().as_u16(), resp.json().unwrap())
}

fn events(client: &reqwest::blocking::Client, hub: &Hub) -> Vec<Value> {
    let resp = client.get(hub.url("/api/events?since=0")).send().unwrap();
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().unwrap();
    v["events"]
        .as_array()
        .or_else(|| v.as_array())
        .cloned()
        .unwrap_or_else(|| panic!("no events in {v}"))
}

#[test]
fn https_ingest_and_reads_with_a_certificate_made_in_the_test() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let hub = pki.hub(dir.path(), &[]);
    let client = pki.client();
    let (status, answer) = post(&client, &hub, &note(1));
    assert_eq!(status, 200, "{answer}");
    let got = events(&client, &hub);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["payload"]["i"], 1);
    let health: Value = client
        .get(hub.url("/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["components"]["http"]["scheme"], "https", "{health}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(hub.addr).unwrap();
    std::io::Write::write_all(
        &mut plain,
        b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .unwrap();
    plain.set_read_timeout(Some(T)).unwrap();
    let mut buf = Vec::new();
    // The hub closes (or resets) the connection: either ends the read.
    let _ = plain.read_to_end(&mut buf);
    assert!(
        !String::from_utf8_lossy(&buf).contains("200 OK"),
        "{:?}",
        String::from_utf8_lossy(&buf)
    );
    // A client that does not trust the CA is refused at the handshake.
    let untrusting = reqwest::blocking::Client::builder()
        .tls_certs_only([])
        .build()
        .unwrap();
    assert!(untrusting.get(hub.url("/health")).send().is_err());
}

#[test]
fn wss_stream_read_with_tokio_tungstenite() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let hub = pki.hub(dir.path(), &[]);
    let client = pki.client();
    assert_eq!(post(&client, &hub, &note(1)).0, 200);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let config = agentpulse::client::tls::client_config(Some(&pki.ca())).unwrap();
    let url = hub.ws_url("/agent-events?since=0");
    assert!(url.starts_with("wss://"), "{url}");
    let got = rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(
            url.as_str(),
            None,
            false,
            Some(tokio_tungstenite::Connector::Rustls(config)),
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        while got.len() < 2 {
            let m = tokio::time::timeout(T, ws.next())
                .await
                .expect("a message in time")
                .expect("the stream is open")
                .unwrap();
            if let tokio_tungstenite::tungstenite::Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v.get("id").is_some() {
                    got.push(v);
                    if got.len() == 1 {
                        // A live one too, posted while the stream is open
                        // (from a thread of its own: reqwest's blocking
                        // client has a runtime of its own).
                        let (ca, url) = (pki.ca(), hub.url("/events"));
                        let status = std::thread::spawn(move || {
                            let pki = Pki::trusting(ca);
                            post_to(&pki.client(), &url, &note(2))
                        })
                        .join()
                        .unwrap();
                        assert_eq!(status, 200);
                    }
                }
            }
        }
        got
    });
    let is: Vec<&Value> = got.iter().map(|e| &e["payload"]["i"]).collect();
    assert_eq!(is, [&json!(1), &json!(2)]);
}

/// Runs `cmd` to its end, at most `T`; its status and stdout.
fn run(cmd: Command) -> (std::process::ExitStatus, String, String) {
    run_with_stdin(cmd, None)
}

/// Runs `cmd`, with `input` on its stdin if given; status, stdout, stderr.
fn run_with_stdin(
    mut cmd: Command,
    input: Option<&str>,
) -> (std::process::ExitStatus, String, String) {
    use std::io::Write;
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = input {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let status = wait_for("the command to end", T, || child.try_wait().unwrap());
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, out, err)
}

#[test]
fn tail_reads_an_https_hub_trusting_the_ca_by_flag_or_ssl_cert_file() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let hub = pki.hub(dir.path(), &[]);
    let client = pki.client();
    for i in 1..=2 {
        assert_eq!(post(&client, &hub, &note(i)).0, 200);
    }
    let base = hub.url("");
    let ca = pki.ca();
    let by_flag = {
        let mut c = bin();
        c.args([
            "tail", "--json", "--since", "0", "--count", "2", "--hub", &base,
        ])
        .arg("--ca-cert")
        .arg(&ca)
        .env_remove("SSL_CERT_FILE");
        c
    };
    let by_env = {
        let mut c = bin();
        c.args([
            "tail", "--json", "--since", "0", "--count", "2", "--hub", &base,
        ])
        .env("SSL_CERT_FILE", &ca);
        c
    };
    for (how, cmd) in [("--ca-cert", by_flag), ("SSL_CERT_FILE", by_env)] {
        let (status, out, err) = run(cmd);
        assert!(status.success(), "{how}: {status:?} {err}");
        let is: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["payload"]["i"].clone())
            .collect();
        assert_eq!(is, [json!(1), json!(2)], "{how}: {out}");
    }
    // An unreadable --ca-cert is an error at once, naming the file.
    let mut c = bin();
    c.args(["tail", "--hub", &base, "--ca-cert", "/nonexistent/ca.pem"]);
    let (status, _, err) = run(c);
    assert!(!status.success());
    assert!(err.contains("--ca-cert /nonexistent/ca.pem"), "{err}");
}

#[test]
fn the_python_sdk_sends_over_tls() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let hub = pki.hub(dir.path(), &[]);
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python/src");
    let script = r#"
import json, sys
import agentpulse
e = agentpulse.Emitter(sys.argv[1], flush_at_exit=False)
for i in range(3):
    e.emit("note", {"i": i})
ok = e.flush(timeout=15)
print(json.dumps({"flushed": ok, "stats": e.stats().as_dict()}))
e.close()
"#;
    let mut c = Command::new(python());
    c.arg("-c")
        .arg(script)
        .arg(hub.url(""))
        .env("PYTHONPATH", &sdk)
        .env("SSL_CERT_FILE", pki.ca());
    let (status, out, err) = run(c);
    assert!(status.success(), "{status:?} {err}");
    let v: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["flushed"], true, "{v}");
    assert_eq!(v["stats"]["sent"], 3, "{v}");
    let got = events(&pki.client(), &hub);
    assert_eq!(got.len(), 3, "{got:?}");
}

/// Starts `serve` with `args` and expects it to exit at once with an
/// error; its stderr.
fn refused_start(args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut c = bin();
    c.args([
        "serve",
        "--quiet",
        "--port",
        "0",
        "--otlp-grpc-port",
        "0",
        "--log-dir",
    ])
    .arg(dir.path())
    .args(args);
    let (status, out, err) = run(c);
    assert!(!status.success(), "started: {out}");
    err
}

#[test]
fn a_missing_or_wrong_certificate_or_key_stops_the_start_with_a_clear_error() {
    let pki = Pki::new();
    let cert = pki.path("cert.pem");
    let key = pki.path("key.pem");
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let err = refused_start(&["--tls-cert", "/nonexistent/cert.pem", "--tls-key", key]);
    assert!(err.contains("--tls-cert /nonexistent/cert.pem"), "{err}");
    let err = refused_start(&["--tls-cert", cert, "--tls-key", "/nonexistent/key.pem"]);
    assert!(err.contains("--tls-key /nonexistent/key.pem"), "{err}");
    // Only one of the two.
    let err = refused_start(&["--tls-cert", cert]);
    assert!(err.contains("--tls-key"), "{err}");
    let err = refused_start(&["--tls-key", key]);
    assert!(err.contains("--tls-cert"), "{err}");
    // Not PEM at all; the key swapped for the certificate.
    let junk = pki.path("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    let err = refused_start(&["--tls-cert", junk.to_str().unwrap(), "--tls-key", key]);
    assert!(err.contains("no PEM certificate"), "{err}");
    let err = refused_start(&["--tls-cert", cert, "--tls-key", cert]);
    assert!(
        err.contains("--tls-key") && err.contains("private key"),
        "{err}"
    );
    // A key that is not the certificate's.
    let other = rcgen::KeyPair::generate().unwrap();
    let other_key = pki.path("other-key.pem");
    std::fs::write(&other_key, other.serialize_pem()).unwrap();
    let err = refused_start(&["--tls-cert", cert, "--tls-key", other_key.to_str().unwrap()]);
    assert!(
        err.contains("--tls-cert") && err.contains("--tls-key"),
        "{err}"
    );
}

/// The limits of issue 22 (5) hold over TLS: a connection that does not
/// finish its handshake is cut after the header timeout, and the cap
/// refuses the connection past it.
#[test]
fn tls_connections_get_the_header_timeout_and_the_cap() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let hub = pki.hub(
        dir.path(),
        &["--header-timeout", "0.3", "--max-total-connections", "1"],
    );
    let client = pki.client();
    let mut silent = TcpStream::connect(hub.addr).unwrap();
    let began = Instant::now();
    // While the silent one holds the only slot, others are turned away.
    assert!(client.get(hub.url("/health")).send().is_err());
    silent.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 64];
    let closed = matches!(silent.read(&mut buf), Ok(0) | Err(_));
    assert!(
        closed && began.elapsed() < T,
        "closed after {:?}",
        began.elapsed()
    );
    let http = wait_for("the slot freed", T, || {
        let r = client.get(hub.url("/api/metrics")).send().ok()?;
        Some(r.json::<Value>().unwrap()["hub"]["http"].clone())
    });
    assert_eq!(http["header_timeouts"], 1, "{http}");
    assert!(http["over_limit"].as_u64() >= Some(1), "{http}");
}

/// Off loopback the made-up token is printed with the dashboard's URL:
/// https when the hub serves TLS.
#[test]
fn the_printed_dashboard_url_says_https() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let hub = pki.hub(dir.path(), &["--bind", "0.0.0.0"]);
    let lines: Vec<String> = (0..2).filter_map(|_| hub.next_stdout_line(T)).collect();
    let dashboard = lines
        .iter()
        .find(|l| l.contains("dashboard"))
        .unwrap_or_else(|| panic!("{lines:?}"));
    assert!(
        dashboard.contains("dashboard https://") && dashboard.contains("/#token="),
        "{dashboard}"
    );
}

/// The Rust SDK and the sending commands reach an https hub: `Client` over
/// its WebSocket (wss) and over `POST /events`, with `get_metrics`;
/// `emit`, `replay` and `claude-hook` (and `demo`, through the same
/// `Client`) with `--ca-cert` or
/// `AGENTPULSE_CA_CERT`. (Before, `Client` refused https URLs: "https is not
/// supported by this build".) Without the CA, the certificate is refused
/// with a message that says so.
#[test]
fn the_rust_client_and_the_sending_commands_reach_an_https_hub() {
    use agentpulse::client::{Client, Transport};
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let hub = pki.hub(dir.path(), &[]);
    let base = hub.url("");
    let ca = pki.ca();
    for (i, transport) in [Transport::WebSocket, Transport::Http]
        .into_iter()
        .enumerate()
    {
        let client = Client::builder(&base)
            .ca_cert(Some(ca.clone()))
            .transport(transport)
            .build()
            .unwrap();
        client
            .emit(
                "note",
                json!({"i": 100 + i, "via": format!("{transport:?}")}),
            )
            .unwrap();
        assert!(client.flush(T), "{transport:?}: flushed");
        assert_eq!(client.stats().rejected, 0, "{transport:?}");
        let m = client.get_metrics(T).unwrap();
        assert!(m["window"].is_object(), "{m}");
        assert!(client.close(T));
    }
    let mut emit = bin();
    emit.args(["emit", "note", r#"{"i":200}"#, "--hub", &base])
        .arg("--ca-cert")
        .arg(&ca)
        .env_remove("SSL_CERT_FILE");
    let (status, _, err) = run(emit);
    assert!(status.success(), "emit: {err}");

    let log = dir.path().join("to-replay.jsonl");
    std::fs::write(
        &log,
        "{\"event_type\":\"note\",\"timestamp\":1700000000,\"payload\":{\"i\":300}}\n",
    )
    .unwrap();
    let mut replay = bin();
    replay
        .args(["replay", "--hub", &base])
        .arg(&log)
        .env("AGENTPULSE_CA_CERT", &ca)
        .env_remove("SSL_CERT_FILE");
    let (status, _, err) = run(replay);
    assert!(status.success(), "replay: {err}");

    let hook = std::fs::read_to_string(format!(
        "{}/tests/fixtures/claude-hooks/session-start.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut claude = bin();
    claude
        .args(["claude-hook", "--hub", &base, "--timeout", "10"])
        .env("AGENTPULSE_CA_CERT", &ca)
        .env_remove("SSL_CERT_FILE");
    let (status, _, err) = run_with_stdin(claude, Some(&hook));
    assert!(status.success(), "claude-hook: {err}");

    let client = pki.client();
    let stored = wait_for("every sender's event", T, || {
        let ev = events(&client, &hub);
        let mut is: Vec<i64> = ev
            .iter()
            .filter_map(|e| e["payload"]["i"].as_i64())
            .collect();
        is.sort();
        let hooked = ev.iter().any(|e| e["event_type"] == "task_queued");
        (is == [100, 101, 200, 300] && hooked).then_some(ev)
    });
    assert_eq!(stored.len(), 5, "{stored:?}");

    // Not trusting the hub's CA: a refusal that names the certificate.
    let mut emit = bin();
    emit.args(["emit", "note", r#"{"i":400}"#, "--hub", &base])
        .env_remove("SSL_CERT_FILE")
        .env_remove("AGENTPULSE_CA_CERT");
    let (status, _, err) = run(emit);
    assert!(!status.success());
    assert!(err.to_lowercase().contains("certificate"), "{err}");
}
