//! A real headless Chromium driven through chromedriver (WebDriver, fantoccini), and the
//! `streamx dashboard` process it looks at.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};

/// Set to make a missing chromedriver fail the tests instead of skipping them (CI sets it).
pub const REQUIRE_BROWSER_ENV: &str = "STREAMX_REQUIRE_BROWSER";

/// Where chromedriver is: `STREAMX_CHROMEDRIVER`, `/usr/bin/chromedriver`, or on `PATH`.
fn chromedriver_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("STREAMX_CHROMEDRIVER").map(PathBuf::from).filter(|p| p.exists()) {
        return Some(path);
    }
    let debian = PathBuf::from("/usr/bin/chromedriver");
    if debian.exists() {
        return Some(debian);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join("chromedriver"))
        .find(|p| p.exists())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "{what} did not listen on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A headless Chromium session; chromedriver is killed on drop.
pub struct Browser {
    pub client: Client,
    driver: Child,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a session. `None` (after a loud message)
    /// when chromedriver is not installed and `STREAMX_REQUIRE_BROWSER` is unset; a panic
    /// when it is set.
    pub async fn start() -> Option<Browser> {
        let Some(driver_path) = chromedriver_path() else {
            if std::env::var_os(REQUIRE_BROWSER_ENV).is_some() {
                panic!("chromedriver is not installed but {REQUIRE_BROWSER_ENV} is set: apt-get install chromium chromium-driver");
            }
            eprintln!(
                "\n!!!!!!!! SKIPPED: chromedriver not found (install Debian's chromium and chromium-driver, or set \
                 STREAMX_CHROMEDRIVER); the dashboard browser tests did not run !!!!!!!!\n"
            );
            return None;
        };
        let port = free_port();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver_path.display()));
        wait_for_port(port, "chromedriver");
        let mut options = serde_json::json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", "--force-device-scale-factor=1"]
        });
        if std::path::Path::new("/usr/bin/chromium").exists() {
            options["binary"] = "/usr/bin/chromium".into();
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".to_string(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("cannot open a Chromium session through chromedriver: {e}"));
        Some(Browser { client, driver })
    }

    /// Closes the session.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// A running `streamx dashboard` on a free loopback port; killed on drop.
pub struct Dashboard {
    pub addr: SocketAddr,
    process: Child,
}

impl Dashboard {
    /// `streamx dashboard --listen 127.0.0.1:0 --sample-every 250ms extra...` against `url`.
    pub fn start(url: &str, extra: &[&str]) -> Dashboard {
        let mut process = Command::new(super::binary())
            .args(["--url", url, "dashboard", "--listen", "127.0.0.1:0", "--sample-every", "250ms"])
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(process.stdout.take().unwrap()).read_line(&mut line).unwrap();
        // "streamx dashboard on http://127.0.0.1:PORT/ ..."
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("the dashboard printed {line:?}"));
        Dashboard { addr, process }
    }

    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// A raw HTTP/1.1 request to `addr` (no client library): the status and the body.
pub fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let response = http_response(addr, method, path, headers);
    (response.status, response.body)
}

/// A response: status, headers (names lowercase) and body.
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The value of the header `name` (any case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// A raw HTTP/1.1 request to `addr`, the whole response. `Host` is `addr` unless `headers`
/// name one.
pub fn http_response(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: 0\r\n");
    if !headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpResponse { status, headers, body: body.to_string() }
}
