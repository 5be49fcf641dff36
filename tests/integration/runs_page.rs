//! The runs page (`GET /`): its API (`GET /runs`, a page at a time), its
//! authentication (the token once, then an `HttpOnly`, `SameSite=Strict`
//! cookie that no other site can use), and — in headless Chromium driven
//! through chromedriver — a live run: listed while it runs, its timeline
//! gaining the model's turns and tool calls as they happen, its end shown
//! without a reload. Screenshots go to `target/tmp/runs-page/` for a person
//! to look at.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use model_test_server::{ModelServer, Script, Turn, tool};
use serde_json::{Value, json};

use crate::durable::server_with_model;
use crate::serve::{BodyJson, Server, project};
use crate::support::{runtime, scratch};

const TOKEN: &str = "runs-page-token-0123456789abcdef";

fn server_with_token(project: &Path, tmp: &Path) -> Server {
    Server::start("serve", project, tmp, &["--token", TOKEN])
}

#[test]
fn the_page_asks_for_the_token_once_and_keeps_it_where_no_other_site_can_use_it() {
    let (project, tmp) = (project(), scratch());
    let server = server_with_token(project.path(), tmp.path());
    let rt = runtime();
    let client = reqwest::Client::new();
    rt.block_on(async {
        // The page and its files: open, strict about what they may load.
        let page = client.get(format!("{}/", server.url)).send().await.unwrap();
        assert_eq!(page.status(), 200);
        let policy = page.headers()["content-security-policy"].to_str().unwrap().to_string();
        assert!(policy.contains("default-src 'none'") && policy.contains("connect-src 'self'"), "{policy}");
        let html = page.text().await.unwrap();
        assert!(html.contains("/ui/app.js"), "{html}");
        for asset in ["/ui/app.js", "/ui/app.css"] {
            let response = client.get(format!("{}{asset}", server.url)).send().await.unwrap();
            assert_eq!(response.status(), 200, "{asset}");
        }
        // The data is not.
        let runs = client.get(format!("{}/runs", server.url)).send().await.unwrap();
        assert_eq!(runs.status(), 401);

        let login = |token: &str| {
            client
                .post(format!("{}/ui/login", server.url))
                .header("content-type", "application/json")
                .body(json!({ "token": token }).to_string())
                .send()
        };
        let wrong = login("not-the-token-at-all-0000000000").await.unwrap();
        assert_eq!(wrong.status(), 401);
        assert!(wrong.headers().get("set-cookie").is_none());
        let right = login(TOKEN).await.unwrap();
        assert_eq!(right.status(), 204);
        let cookie = right.headers()["set-cookie"].to_str().unwrap().to_string();
        assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
        let pair = cookie.split(';').next().unwrap().to_string();

        // With the cookie, the API answers; from another site's page, the
        // same cookie does nothing.
        let listed = client.get(format!("{}/runs", server.url)).header("cookie", &pair).send().await.unwrap();
        assert_eq!(listed.status(), 200);
        assert_eq!(listed.body_json().await["runs"], json!([]));
        let invoke = |origin: Option<&str>, site: Option<&str>| {
            let mut request = client
                .post(format!("{}/agents/probe/x", server.url))
                .header("cookie", &pair)
                .header("content-type", "application/json")
                .body(json!({"mode": "exec", "command": "true"}).to_string());
            if let Some(origin) = origin {
                request = request.header("origin", origin);
            }
            if let Some(site) = site {
                request = request.header("sec-fetch-site", site);
            }
            request.send()
        };
        assert_eq!(invoke(Some("http://evil.example"), None).await.unwrap().status(), 403);
        assert_eq!(invoke(None, Some("cross-site")).await.unwrap().status(), 403);
        let own_origin = server.url.clone();
        let same = invoke(Some(&own_origin), Some("same-origin")).await.unwrap();
        assert_eq!(same.status(), 200, "the page's own request was refused");

        let logout = client.post(format!("{}/ui/logout", server.url)).header("cookie", &pair).send().await.unwrap();
        assert!(logout.headers()["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    });
}

#[test]
fn runs_come_a_page_at_a_time_newest_first_and_filtered() {
    let (project, tmp) = (project(), scratch());
    let server = Server::start("serve", project.path(), tmp.path(), &[]);
    let rt = runtime();
    let client = reqwest::Client::new();
    let mut started = Vec::new();
    for (i, command) in ["true", "true", "exit 3", "true", "true"].iter().enumerate() {
        let request = client
            .post(format!("{}/agents/probe/page-{}", server.url, i % 2))
            .body(json!({"mode": "exec", "command": command}).to_string());
        let answer = rt.block_on(async { request.send().await.unwrap().body_json().await });
        started.push(answer["runId"].as_str().unwrap_or_else(|| panic!("{answer}")).to_string());
    }
    let get = |query: &str| -> (u16, Value) {
        let request = client.get(format!("{}/runs?{query}", server.url));
        rt.block_on(async {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.body_json().await)
        })
    };
    let mut seen = Vec::new();
    let mut query = "limit=2".to_string();
    loop {
        let (status, page) = get(&query);
        assert_eq!(status, 200, "{page}");
        let runs = page["runs"].as_array().unwrap();
        assert!(runs.len() <= 2, "{page}");
        seen.extend(runs.iter().map(|run| run["runId"].as_str().unwrap().to_string()));
        match page["next"].as_str() {
            Some(next) => query = format!("limit=2&before={next}"),
            None => break,
        }
    }
    let newest_first: Vec<String> = started.iter().rev().cloned().collect();
    assert_eq!(seen, newest_first);
    let (_, ids) = get("id=page-1");
    assert_eq!(ids["runs"].as_array().unwrap().len(), 2, "{ids}");
    let (_, one) = get(&format!("id={}", started[2]));
    let run = &one["runs"][0];
    assert_eq!((run["status"].as_str(), run["agent"].as_str()), (Some("succeeded"), Some("probe")), "{one}");
    assert!(run["durationMs"].as_u64().is_some(), "{one}");
    let (_, none) = get("agent=nobody");
    assert_eq!(none["runs"], json!([]));
    assert_eq!(get("limit=0").0, 400);
    assert_eq!(get("limit=100000").0, 400);
    assert_eq!(get("before=garbage").0, 400);
}

/// Chromium and chromedriver, from Debian's `chromium` and
/// `chromium-driver` (`.ci/run` installs them), when both are here.
fn browser() -> Option<(PathBuf, PathBuf)> {
    let find = |names: &[&str]| names.iter().find_map(|name| flue::which::find_on_path(name));
    let found = find(&["chromium", "chromium-browser", "google-chrome"]).zip(find(&["chromedriver"]));
    if found.is_none() {
        let why = "runs_page: no chromium and chromedriver (Debian: apt-get install chromium chromium-driver)";
        if std::env::var("FLUE_TEST_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("{why}, and FLUE_TEST_REQUIRE_BROWSER=1");
        }
        eprintln!("skipped: {why}");
    }
    found
}

/// chromedriver on a free loopback port, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start(chromedriver: &Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        crate::durable::wait_until("chromedriver listens", Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Driver { child, url }
    }
}

/// The element `css` finds, once the page shows it (at most a minute);
/// otherwise the page as it is (`failed.png` beside the screenshots, and
/// its text in the panic).
async fn wait_for(browser: &fantoccini::Client, css: &str) -> fantoccini::elements::Element {
    match browser.wait().at_most(Duration::from_secs(60)).for_element(fantoccini::Locator::Css(css)).await {
        Ok(element) => element,
        Err(err) => {
            let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("runs-page");
            if let Ok(png) = browser.screenshot().await {
                let _ = std::fs::write(shots.join("failed.png"), png);
            }
            let body = match browser.find(fantoccini::Locator::Css("body")).await {
                Ok(body) => body.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            panic!("{css} never showed ({err}); the page says:\n{body}");
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_live_run_shows_in_the_browser_as_it_happens() {
    let Some((chromium, chromedriver)) = browser() else { return };
    let rt = runtime();
    // The model: a tool call, then an answer, each after a pause, so that
    // the run is seen going on.
    let slow = |turn: Turn| Turn { delay_ms: Some(1200), ..turn };
    let script = Script {
        turns: vec![
            slow(model_test_server::calls(vec![tool("bash", json!({"command": "echo from-the-tool"}))])),
            slow(Turn { text: Some("All done here.".into()), delta_bytes: Some(4), ..Default::default() }),
            // A later run hands work to a sub-agent.
            model_test_server::calls(vec![tool("task", json!({"prompt": "Look around.", "agent": "general"}))]),
            model_test_server::text("Nothing to see."),
            model_test_server::text("The sub-agent saw nothing."),
        ],
    };
    let model = rt.block_on(ModelServer::start(script)).unwrap();
    let (project, tmp) = (project(), scratch());
    let server = server_with_model(project.path(), tmp.path(), &model, &[]);
    let driver = Driver::start(&chromedriver);
    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("runs-page");
    std::fs::create_dir_all(&shots).unwrap();

    rt.block_on(async {
        use fantoccini::Locator;
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                // Root in CI: Chromium's own sandbox cannot start there.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000"],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let browser = fantoccini::ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&driver.url)
            .await
            .expect("a headless Chromium session");
        let shoot = |name: &str| {
            let (browser, path) = (browser.clone(), shots.join(name));
            async move { std::fs::write(path, browser.screenshot().await.unwrap()).unwrap() }
        };

        // The list is open before the run starts: the run appears in it,
        // running, without a reload.
        browser.goto(&format!("{}/#/", server.url)).await.unwrap();
        wait_for(&browser, "#runs").await;
        let client = reqwest::Client::new();
        let body = json!({"mode": "prompt", "model": "openai/gpt-test", "prompts": ["Say hello."], "tools": ["bash"]});
        let started = client
            .post(format!("{}/agents/probe/in-the-browser", server.url))
            .header("x-webhook", "true")
            .body(body.to_string())
            .send()
            .await
            .unwrap()
            .body_json()
            .await;
        let run_id = started["runId"].as_str().unwrap_or_else(|| panic!("{started}")).to_string();
        let link = wait_for(&browser, &format!("tr[data-run='{run_id}'] a")).await;
        wait_for(&browser, &format!("tr[data-run='{run_id}'] .status.running")).await;
        shoot("runs-live.png").await;

        // Its page: the timeline gains the tool call while the model is
        // still answering, then the model's text, then the end — no reload.
        link.click().await.unwrap();
        let tool = wait_for(&browser, "li[data-kind='tool']").await.text().await.unwrap();
        assert!(tool.contains("bash") && tool.contains("from-the-tool"), "{tool}");
        // What the tool gave back, too (the command's output, not its arguments).
        let back = browser.find(Locator::Css("li[data-kind='tool'] .tool-result")).await.unwrap().text().await.unwrap();
        assert!(back.contains("from-the-tool") && !back.contains("command"), "{back}");
        assert!(browser.find(Locator::Css("#result")).await.is_err(), "the tool call showed only after the end");
        shoot("run-live.png").await;
        let result = wait_for(&browser, "#result").await.text().await.unwrap();
        assert!(result.contains("All done here."), "{result}");
        let text = browser.find(Locator::Css(".model-text")).await.unwrap().text().await.unwrap();
        assert!(text.contains("All done here."), "the streamed text: {text}");
        let turns = browser.find_all(Locator::Css("li[data-kind='model']")).await.unwrap();
        assert!(turns.len() >= 2, "one model step per turn, {} shown", turns.len());
        wait_for(&browser, "#summary .status.succeeded").await;
        shoot("run-done.png").await;

        // A failed step is marked as such at a glance (a read outside the
        // sandbox, refused).
        let failed = client
            .post(format!("{}/agents/probe/fails", server.url))
            .body(json!({"mode": "exec", "command": "true", "read": "/workspace/../etc/passwd"}).to_string())
            .send()
            .await
            .unwrap()
            .body_json()
            .await;
        let failed_id = failed["runId"].as_str().unwrap_or_else(|| panic!("{failed}")).to_string();
        browser.goto(&format!("{}/#/runs/{failed_id}", server.url)).await.unwrap();
        let marked = wait_for(&browser, "li.fail.op").await.text().await.unwrap();
        assert!(marked.contains("/etc/passwd") && marked.contains("permission-denied"), "{marked}");
        shoot("run-failed-step.png").await;

        // A sub-agent's steps show nested under the task that started them.
        let delegated = client
            .post(format!("{}/agents/probe/delegates", server.url))
            .body(json!({"mode": "prompt-with", "model": "openai/gpt-test", "prompts": ["Delegate."]}).to_string())
            .send()
            .await
            .unwrap()
            .body_json()
            .await;
        let delegated_id = delegated["runId"].as_str().unwrap_or_else(|| panic!("{delegated}")).to_string();
        browser.goto(&format!("{}/#/runs/{delegated_id}", server.url)).await.unwrap();
        let task = wait_for(&browser, "li[data-kind='task']").await.text().await.unwrap();
        assert!(task.contains("general") && task.contains("sub-agent task-1"), "{task}");
        let nested = wait_for(&browser, "li.nested-1[data-kind='model']").await.text().await.unwrap();
        assert!(nested.contains("Nothing to see."), "the sub-agent's turn: {nested}");
        wait_for(&browser, "li[data-kind='task end'].ok").await;
        let after = browser.find_all(Locator::Css("li[data-kind='model']:not(.nested)")).await.unwrap();
        assert_eq!(after.len(), 2, "the parent's two turns are not nested");
        shoot("run-task.png").await;

        // The agents page: the curl line, and the form runs the agent.
        browser.goto(&format!("{}/#/agents", server.url)).await.unwrap();
        let card = wait_for(&browser, "section[data-agent='probe']").await;
        let curl = card.find(Locator::Css("pre")).await.unwrap().text().await.unwrap();
        assert!(curl.starts_with("curl ") && curl.contains("/agents/probe/"), "{curl}");
        let payload = card.find(Locator::Css("textarea")).await.unwrap();
        payload.clear().await.unwrap();
        payload.send_keys(&json!({"mode": "exec", "command": "echo from-the-form"}).to_string()).await.unwrap();
        card.find(Locator::XPath(".//button[contains(., 'Run and wait')]")).await.unwrap().click().await.unwrap();
        let answer = wait_for(&browser, "section[data-agent='probe'] div pre").await.text().await.unwrap();
        assert!(answer.contains("from-the-form"), "{answer}");
        shoot("agents.png").await;
        browser.close().await.unwrap();
    });
    drop(driver);
}
