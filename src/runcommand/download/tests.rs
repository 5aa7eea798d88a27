use super::*;
use crate::aws::http::test_server::{Received, response, serve};
use crate::aws::http::{HttpClient, HttpConfig};
use crate::document::parameter_store::Parameter;
use crate::runcommand::sources::{DocumentSource, ObjectSource, RemoteDocument};
use crate::state::testdir::TestDir;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Documents, objects and parameters held in memory; the calls made.
#[derive(Default)]
struct Fake {
    documents: BTreeMap<String, String>,
    objects: BTreeMap<String, Vec<u8>>,
    /// `None`: the source cannot list (as the agent's S3 client may not).
    listing: Option<()>,
    parameters: Vec<Parameter>,
    calls: Mutex<Vec<String>>,
}

impl DocumentSource for Fake {
    fn get_document(&self, name: &str, version: Option<&str>) -> Result<RemoteDocument, String> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("GetDocument {name} {version:?}"));
        let content = self.documents.get(name).ok_or("InvalidDocument")?;
        Ok(RemoteDocument {
            name: name.into(),
            document_version: "1".into(),
            document_format: "YAML".into(),
            content: content.clone(),
        })
    }
}

impl ObjectSource for Fake {
    fn get_object(
        &self,
        bucket: &str,
        key: &str,
        out: &mut dyn Write,
        limit: u64,
    ) -> Result<u64, String> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("GetObject {bucket}/{key}"));
        let bytes = self.objects.get(key).ok_or("NoSuchKey")?;
        assert_eq!(limit, MAX_FILE_BYTES);
        out.write_all(bytes).map_err(|e| e.to_string())?;
        Ok(bytes.len() as u64)
    }

    fn list_keys(&self, bucket: &str, prefix: &str, _: usize) -> Result<Vec<String>, String> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("List {bucket}/{prefix}"));
        self.listing.ok_or("cannot list")?;
        Ok(self
            .objects
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }
}

impl SecretSource for Fake {
    fn get_decrypted(&self, name: &str) -> Result<Parameter, String> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("GetParameters {name}"));
        self.parameters
            .iter()
            .find(|p| p.name == name)
            .cloned()
            .ok_or(format!(
                "The following parameter(s) cannot be resolved: {name}"
            ))
    }
}

fn sources(fake: Fake) -> (Sources, Arc<Fake>) {
    let fake = Arc::new(fake);
    let http = HttpClient::new(&HttpConfig {
        user_agent: "test".into(),
        extra_ca_files: Vec::new(),
    })
    .unwrap();
    let sources = Sources {
        documents: fake.clone(),
        objects: fake.clone(),
        secrets: fake.clone(),
        http: Some(Arc::new(http)),
        ..Sources::unavailable("tests")
    };
    (sources, fake)
}

fn parameter(name: &str, kind: &str, value: &str) -> Parameter {
    Parameter {
        name: name.into(),
        kind: kind.into(),
        value: value.into(),
        version: 1,
    }
}

fn read(path: impl AsRef<Path>) -> String {
    fs::read_to_string(path).unwrap()
}

fn mode(path: impl AsRef<Path>) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// The directory's entries, temporary files included.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn inputs_are_validated_with_upstreams_texts() {
    let err = |v: Value| parse_input(&v).unwrap_err();
    assert_eq!(
        err(json!({"sourceInfo": "{}"})),
        "invalid input: SourceType must be specified"
    );
    assert_eq!(
        err(json!({"sourceType": "FTP", "sourceInfo": "{}"})),
        "invalid input: Unsupported source type"
    );
    assert_eq!(
        err(json!({"sourceType": "S3"})),
        "invalid input: SourceInfo must be specified"
    );
    assert!(err(json!({"sourceType": 3})).contains("cannot unmarshal number into Go struct field DownloadContentPlugin.sourceType of type string"));
    // The console sends sourceInfo as text, documents (StringMap) as an object; keys ignore case.
    let input =
        parse_input(&json!({"SourceType": "S3", "sourceinfo": {"path": "https://x"}})).unwrap();
    assert_eq!(input.source_info, r#"{"path":"https://x"}"#);
    assert_eq!(input.destination_path, "");
}

#[test]
fn destinations_are_absolute_or_under_the_downloads_directory() {
    let dir = Path::new("/var/orch/cmd-1");
    assert_eq!(destination("/opt/x.sh", dir), "/opt/x.sh");
    assert_eq!(
        destination("a/x.sh", dir),
        "/var/orch/cmd-1/downloads/a/x.sh"
    );
    assert_eq!(destination("", dir), "/var/orch/cmd-1/downloads/");
    assert_eq!(document_name_and_version("Doc:3"), ("Doc", Some("3")));
    assert_eq!(
        document_name_and_version("arn:aws:ssm:us-east-1:1:document/Doc:2"),
        ("arn:aws:ssm:us-east-1:1:document/Doc", Some("2"))
    );
    assert_eq!(document_name_and_version("Doc"), ("Doc", None));
}

#[test]
fn references_and_their_prefixes_are_checked() {
    assert_eq!(
        parameter_reference("{{ ssm-secure:/gh/token }}", true).as_deref(),
        Some("ssm-secure:/gh/token")
    );
    assert_eq!(
        parameter_reference("{{ssm:/user}}", false).as_deref(),
        Some("ssm:/user")
    );
    assert_eq!(parameter_reference("{{ssm:/user}}", true), None);
    assert_eq!(parameter_reference("token", false), None);
    let (_, fake) = sources(Fake {
        parameters: vec![
            parameter("plain", "String", "v"),
            parameter("secret", "SecureString", "s"),
        ],
        ..Fake::default()
    });
    assert_eq!(
        resolve_reference("ssm-secure:secret", fake.as_ref()).unwrap(),
        "s"
    );
    assert_eq!(
        resolve_reference("ssm-secure:plain", fake.as_ref()).unwrap_err(),
        "secure prefix ssm-secure: is used for a non-secure type String"
    );
    assert_eq!(
        resolve_reference("ssm:secret", fake.as_ref()).unwrap_err(),
        "non-secure prefix ssm: is used for a secure type SecureString"
    );
}

#[test]
fn staged_files_appear_whole_or_not_at_all() {
    let t = TestDir::new("staged");
    let dest = t.path().join("new/dir/a.sh");
    let mut staged = Staged::create(&dest, 5).unwrap();
    staged.write_all(b"12345").unwrap();
    assert!(!dest.exists(), "visible before the commit");
    staged
        .commit(Some(&crate::aws::sigv4::sha256_hex(b"12345")))
        .unwrap();
    assert_eq!(read(&dest), "12345");
    assert_eq!(mode(&dest), 0o700);
    assert_eq!(mode(t.path().join("new")), 0o700);

    let mut over = Staged::create(&dest, 5).unwrap();
    assert!(over.write_all(b"123456").is_err());
    assert!(
        over.failure
            .clone()
            .unwrap()
            .contains("larger than 5 bytes")
    );
    drop(over);
    let wrong = Staged::create(&dest, 5).unwrap();
    let err = wrong.commit(Some(&"0".repeat(64))).unwrap_err();
    assert!(
        err.contains(&format!(
            "not {} as sourceInfo's sha256 says",
            "0".repeat(64)
        )),
        "{err}"
    );
    // Neither replaced the committed file nor left a temporary one.
    assert_eq!(read(&dest), "12345");
    assert_eq!(entries(&t.path().join("new/dir")), ["a.sh"]);
}

fn run_in(t: &TestDir, sources: &Sources, inputs: Value) -> Result<String, String> {
    run(&inputs, t.path(), sources)
}

#[test]
fn ssm_documents_are_saved_as_json_names_in_a_directory() {
    let t = TestDir::new("ssmdoc");
    let mut fake = Fake::default();
    fake.documents
        .insert("Setup".into(), "schemaVersion: '2.2'\n".into());
    let (sources, fake) = sources(fake);
    let into_dir = json!({"sourceType": "SSMDocument", "sourceInfo": {"name": "Setup:4"}, "destinationPath": "docs/"});
    let out = run_in(&t, &sources, into_dir).unwrap();
    let dest = t.path().join("downloads/docs/Setup.json");
    assert_eq!(
        out,
        format!(
            "Content downloaded to {}/downloads/docs/",
            t.path().display()
        )
    );
    assert_eq!(read(&dest), "schemaVersion: '2.2'\n");
    let named = json!({"sourceType": "SSMDocument", "sourceInfo": "{\"name\": \"Setup\"}", "destinationPath": "setup.yaml"});
    run_in(&t, &sources, named).unwrap();
    assert_eq!(
        read(t.path().join("downloads/setup.yaml")),
        "schemaVersion: '2.2'\n"
    );
    assert_eq!(
        *fake.calls.lock().unwrap(),
        ["GetDocument Setup Some(\"4\")", "GetDocument Setup None"]
    );
    let missing = json!({"sourceType": "SSMDocument", "sourceInfo": {"name": "Nope"}});
    assert_eq!(
        run_in(&t, &sources, missing).unwrap_err(),
        "InvalidDocument"
    );
    let unnamed = json!({"sourceType": "SSMDocument", "sourceInfo": {}});
    assert_eq!(
        run_in(&t, &sources, unnamed).unwrap_err(),
        "SSM Document name in SourceType must be specified"
    );
}

#[test]
fn s3_objects_and_folders_land_as_upstream_places_them() {
    let t = TestDir::new("s3");
    let mut fake = Fake::default();
    fake.objects
        .insert("scripts/run.sh".into(), b"echo run\n".to_vec());
    fake.objects
        .insert("scripts/lib/util.sh".into(), b"echo util\n".to_vec());
    let (mut sources, _) = sources(fake);
    let s3 = |path: &str, dest: &str| json!({"sourceType": "S3", "sourceInfo": {"path": path}, "destinationPath": dest});
    let object = "https://bucket.s3.eu-west-1.amazonaws.com/scripts/run.sh";
    // A source that cannot list: a key is fetched as one object, a folder fails.
    run_in(&t, &sources, s3(object, "one/")).unwrap();
    assert_eq!(read(t.path().join("downloads/one/run.sh")), "echo run\n");
    run_in(&t, &sources, s3(object, "renamed.sh")).unwrap();
    assert_eq!(read(t.path().join("downloads/renamed.sh")), "echo run\n");
    let folder = "https://s3.eu-west-1.amazonaws.com/bucket/scripts/";
    assert_eq!(
        run_in(&t, &sources, s3(folder, "tree")).unwrap_err(),
        "cannot list"
    );

    let mut listing = Fake {
        listing: Some(()),
        ..Fake::default()
    };
    listing
        .objects
        .insert("scripts/run.sh".into(), b"echo run\n".to_vec());
    listing
        .objects
        .insert("scripts/lib/util.sh".into(), b"echo util\n".to_vec());
    sources = self::sources(listing).0;
    run_in(&t, &sources, s3(folder, "tree")).unwrap();
    assert_eq!(read(t.path().join("downloads/tree/run.sh")), "echo run\n");
    assert_eq!(
        read(t.path().join("downloads/tree/lib/util.sh")),
        "echo util\n"
    );
    let mut hostile = Fake {
        listing: Some(()),
        ..Fake::default()
    };
    hostile
        .objects
        .insert("scripts/../../escape.sh".into(), b"x".to_vec());
    let refused = run_in(&t, &self::sources(hostile).0, s3(folder, "tree")).unwrap_err();
    assert!(refused.contains("is not a name inside"), "{refused}");
    assert!(!t.path().join("escape.sh").exists());
    assert_eq!(
        run_in(&t, &sources, s3("https://example.com/bucket/k", "")).unwrap_err(),
        "invalid S3 path parameter"
    );
    let sha = json!({"sourceType": "S3", "sourceInfo": {"path": object, "sha256": "ab"}});
    assert!(
        run_in(&t, &sources, sha)
            .unwrap_err()
            .contains("64 hexadecimal digits")
    );
}

/// One answer of [`web_server`]: path, status, headers, body.
type Route = (&'static str, u16, Vec<(&'static str, String)>, Vec<u8>);

/// A plain HTTP server answering each route's path; other paths 404.
fn web_server(routes: Vec<Route>) -> crate::aws::http::test_server::Server {
    serve(move |r: &Received| {
        let path = r.request_line.split(' ').nth(1).unwrap_or_default();
        let found = routes.iter().find(|(p, ..)| *p == path);
        Some(match found {
            Some((_, status, headers, body)) => {
                let headers: Vec<(&str, &str)> =
                    headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
                response(*status, &headers, body)
            }
            None => response(404, &[], b"{\"message\":\"Not Found\"}"),
        })
    })
}

#[test]
fn http_downloads_follow_redirects_and_fail_with_upstreams_texts() {
    let t = TestDir::new("http");
    let server = web_server(vec![
        (
            "/old",
            302,
            vec![("Location", "/new/run.sh".into())],
            Vec::new(),
        ),
        ("/new/run.sh", 200, Vec::new(), b"echo hi\n".to_vec()),
    ]);
    let (sources, fake) = sources(Fake {
        parameters: vec![parameter("web-pass", "SecureString", "p4ss")],
        ..Fake::default()
    });
    let http = |url: String, extra: Value| {
        let mut info = json!({"url": url, "allowInsecureDownload": true});
        info.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({"sourceType": "HTTP", "sourceInfo": info, "destinationPath": "web/run.sh"})
    };
    let basic = json!({"authMethod": "Basic", "username": "me", "password": "{{ssm-secure:web-pass}}",
                       "sha256": crate::aws::sigv4::sha256_hex(b"echo hi\n")});
    run_in(&t, &sources, http(format!("{}/old", server.url()), basic)).unwrap();
    let dest = t.path().join("downloads/web/run.sh");
    assert_eq!(read(&dest), "echo hi\n");
    assert_eq!(mode(&dest), 0o700);
    let requests: Vec<Received> = server.requests.try_iter().collect();
    assert_eq!(requests.len(), 2);
    let expected = format!("Basic {}", crate::base64::encode(b"me:p4ss"));
    assert!(
        requests
            .iter()
            .all(|r| r.header("authorization") == Some(expected.as_str()))
    );
    assert_eq!(*fake.calls.lock().unwrap(), ["GetParameters web-pass"]);

    let missing = run_in(
        &t,
        &sources,
        http(format!("{}/gone", server.url()), json!({})),
    );
    assert_eq!(
        missing.unwrap_err(),
        "Failed to download file: Status: 404 Not Found"
    );
    let mut insecure = http(format!("{}/new/run.sh", server.url()), json!({}));
    insecure["sourceInfo"]["allowInsecureDownload"] = json!(false);
    assert_eq!(
        run_in(&t, &sources, insecure).unwrap_err(),
        web_insecure_text()
    );
    // Into a directory, the file is upstream's `download<random>`.
    let into_dir = json!({"sourceType": "HTTP", "destinationPath": "dir/",
                          "sourceInfo": {"url": format!("{}/new/run.sh", server.url()), "allowInsecureDownload": true}});
    run_in(&t, &sources, into_dir).unwrap();
    let names = entries(&t.path().join("downloads/dir"));
    assert!(
        names.len() == 1 && names[0].starts_with("download"),
        "{names:?}"
    );
    assert_eq!(
        entries(&t.path().join("downloads/web")),
        ["run.sh"],
        "a failed download left a file"
    );
}

fn web_insecure_text() -> &'static str {
    "Non secure URL provided and insecure download is not allowed. Provide a secure URL or set \
     'allowInsecureDownload' to true to perform the download operation"
}

#[test]
fn github_files_and_directories_come_through_the_contents_api() {
    let t = TestDir::new("github");
    let file = |path: &str, text: &[u8]| {
        json!({"type": "file", "path": path, "encoding": "base64",
               "content": format!("{}\n", crate::base64::encode(text))})
        .to_string()
        .into_bytes()
    };
    let server = web_server(vec![
        (
            "/repos/o/r/contents/tools?ref=master",
            200,
            Vec::new(),
            json!([{"type": "file", "path": "tools/a.sh"}, {"type": "dir", "path": "tools/sub"}])
                .to_string()
                .into_bytes(),
        ),
        (
            "/repos/o/r/contents/tools/a.sh?ref=master",
            200,
            Vec::new(),
            file("tools/a.sh", b"echo a\n"),
        ),
        (
            "/repos/o/r/contents/tools/sub?ref=master",
            200,
            Vec::new(),
            json!([{"type": "file", "path": "tools/sub/b.sh"}])
                .to_string()
                .into_bytes(),
        ),
        (
            "/repos/o/r/contents/tools/sub/b.sh?ref=master",
            200,
            Vec::new(),
            file("tools/sub/b.sh", b"echo b\n"),
        ),
        (
            "/repos/o/private/contents/x.sh?ref=dev",
            200,
            Vec::new(),
            file("x.sh", b"echo x\n"),
        ),
    ]);
    let (sources, _) = sources(Fake {
        parameters: vec![parameter("gh-token", "SecureString", "ghp_secret")],
        ..Fake::default()
    });
    let github = |info: Value, dest: &str| {
        github::download_from(
            &server.url(),
            &info.to_string(),
            &destination(dest, t.path()),
            &sources,
        )
    };
    github(
        json!({"owner": "o", "repository": "r", "path": "tools"}),
        "tree",
    )
    .unwrap();
    assert_eq!(read(t.path().join("downloads/tree/a.sh")), "echo a\n");
    assert_eq!(read(t.path().join("downloads/tree/sub/b.sh")), "echo b\n");
    let private = json!({"owner": "o", "repository": "private", "path": "x.sh",
                         "getOptions": "branch:dev", "tokenInfo": "{{ ssm-secure:gh-token }}"});
    github(private, "bin/").unwrap();
    assert_eq!(read(t.path().join("downloads/bin/x.sh")), "echo x\n");
    let requests: Vec<Received> = server.requests.try_iter().collect();
    let last = requests.last().unwrap();
    assert_eq!(last.header("authorization"), Some("Bearer ghp_secret"));
    assert!(
        requests[..4]
            .iter()
            .all(|r| r.header("authorization").is_none())
    );

    let missing = github(
        json!({"owner": "o", "repository": "r", "path": "nope.sh"}),
        "",
    );
    assert_eq!(
        missing.unwrap_err(),
        format!(
            "GET {}/repos/o/r/contents/nope.sh?ref=master: 404 Not Found []",
            server.url()
        )
    );
    let bad_token = github(
        json!({"owner": "o", "repository": "r", "tokenInfo": "ghp_plain"}),
        "",
    );
    assert!(bad_token.unwrap_err().starts_with(
        "Format of specifying ssm parameter used for token-parameter-name is incorrect."
    ));
    let unknown = github(
        json!({"owner": "o", "repository": "r", "tokenInfo": "{{ssm-secure:nope}}"}),
        "",
    );
    assert_eq!(
        unknown.unwrap_err(),
        "Could not resolve ssm parameter - [ssm-secure:nope]. Error - The following parameter(s) cannot be resolved: nope"
    );
    let no_owner = github(json!({"repository": "r"}), "");
    assert_eq!(
        no_owner.unwrap_err(),
        "Owner for GitHub SourceType must be specified"
    );
}

#[test]
fn a_github_file_without_content_comes_from_its_download_url_with_the_token() {
    let t = TestDir::new("github-raw");
    let base: Arc<Mutex<String>> = Arc::default();
    let seen = base.clone();
    let server = serve(move |r: &Received| {
        let path = r.request_line.split(' ').nth(1).unwrap_or_default();
        let url = seen.lock().unwrap().clone();
        Some(match path {
            "/repos/o/r/contents/big.bin?ref=master" => {
                let entry = json!({"type": "file", "path": "big.bin", "encoding": "none", "content": "",
                                   "download_url": format!("{url}/raw/o/r/master/big.bin")});
                response(200, &[], entry.to_string().as_bytes())
            }
            "/raw/o/r/master/big.bin" => response(200, &[], b"large bytes"),
            _ => response(404, &[], b"{\"message\":\"Not Found\"}"),
        })
    });
    *base.lock().unwrap() = server.url();
    let (sources, _) = sources(Fake {
        parameters: vec![parameter("tok", "SecureString", "ghp_raw")],
        ..Fake::default()
    });
    let info = json!({"owner": "o", "repository": "r", "path": "big.bin", "tokenInfo": "{{ssm-secure:tok}}",
                      "sha256": crate::aws::sigv4::sha256_hex(b"large bytes")});
    let dest = destination("big.bin", t.path());
    github::download_from(&server.url(), &info.to_string(), &dest, &sources).unwrap();
    assert_eq!(read(t.path().join("downloads/big.bin")), "large bytes");
    let requests: Vec<Received> = server.requests.try_iter().collect();
    assert_eq!(requests.len(), 2);
    assert!(
        requests
            .iter()
            .all(|r| r.header("authorization") == Some("Bearer ghp_raw"))
    );
}
