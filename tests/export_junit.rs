//! `check --junit`: the XML is parsed back with a real XML parser (quick-xml) and its suites,
//! cases, failures and skips are counted against the verdict JSON.

#![expect(
    clippy::expect_used,
    reason = "test helpers panic with context (STYLE.md: tests panic, never return Result)"
)]

mod export_common;

use std::{collections::BTreeMap, path::Path};

use export_common::{RICH, check_json, fixtures, run, write};
use quick_xml::{Reader, events::Event};

#[derive(Debug, Default)]
struct Case {
    failure: Option<(String, String, String)>, // type, message, text
    skipped: Option<String>,
}

type Attrs = BTreeMap<String, String>;
/// A suite: its attributes and its (classname, name, case) test cases.
type Suite = (Attrs, Vec<(String, String, Case)>);

#[derive(Debug, Default)]
struct Parsed {
    root: Attrs,
    suites: Vec<Suite>,
}

fn attrs(e: &quick_xml::events::BytesStart<'_>) -> BTreeMap<String, String> {
    e.attributes()
        .map(|a| {
            let a = a.expect("well-formed attribute");
            (
                String::from_utf8(a.key.as_ref().to_vec()).expect("utf-8 key"),
                a.unescape_value().expect("escaped value").into_owned(),
            )
        })
        .collect()
}

/// Parses the JUnit document strictly (end tags checked, every entity resolved).
fn parse(xml: &str) -> Parsed {
    let mut r = Reader::from_str(xml);
    r.config_mut().check_end_names = true;
    let mut p = Parsed::default();
    let mut stack: Vec<String> = Vec::new();
    let mut in_failure = false;
    loop {
        let ev = r
            .read_event()
            .unwrap_or_else(|e| panic!("XML error at {}: {e}\n{xml}", r.buffer_position()));
        match ev {
            Event::Eof => break,
            Event::Start(e) | Event::Empty(e) => {
                let name = String::from_utf8(e.name().as_ref().to_vec()).expect("utf-8");
                let a = attrs(&e);
                match name.as_str() {
                    "testsuites" => p.root = a,
                    "testsuite" => p.suites.push((a, Vec::new())),
                    "testcase" => {
                        let s = p.suites.last_mut().expect("testcase inside a testsuite");
                        s.1.push((a["classname"].clone(), a["name"].clone(), Case::default()));
                    }
                    "failure" => {
                        let c = &mut p
                            .suites
                            .last_mut()
                            .expect("suite")
                            .1
                            .last_mut()
                            .expect("case")
                            .2;
                        assert!(c.failure.is_none(), "two failures in one testcase");
                        c.failure = Some((a["type"].clone(), a["message"].clone(), String::new()));
                        in_failure = true;
                    }
                    "skipped" => {
                        let c = &mut p
                            .suites
                            .last_mut()
                            .expect("suite")
                            .1
                            .last_mut()
                            .expect("case")
                            .2;
                        c.skipped = Some(a.get("message").cloned().unwrap_or_default());
                    }
                    "properties" | "property" | "system-out" => {}
                    "error" => panic!("unexpected error element for a usable trace"),
                    other => panic!("unexpected element {other}"),
                }
                stack.push(name);
            }
            Event::End(e) => {
                if e.name().as_ref() == b"failure" {
                    in_failure = false;
                }
                stack.pop();
            }
            Event::Text(t) if in_failure => {
                let s = t.decode().expect("text").into_owned();
                let c = &mut p
                    .suites
                    .last_mut()
                    .expect("suite")
                    .1
                    .last_mut()
                    .expect("case")
                    .2;
                if let Some(f) = c.failure.as_mut() {
                    f.2.push_str(&s);
                }
            }
            Event::GeneralRef(g) if in_failure => {
                let ent = g.decode().expect("ref").into_owned();
                let s = match ent.as_str() {
                    "amp" => "&".to_owned(),
                    "lt" => "<".to_owned(),
                    "gt" => ">".to_owned(),
                    "quot" => "\"".to_owned(),
                    "apos" => "'".to_owned(),
                    other => panic!("unknown entity {other}"),
                };
                let c = &mut p
                    .suites
                    .last_mut()
                    .expect("suite")
                    .1
                    .last_mut()
                    .expect("case")
                    .2;
                if let Some(f) = c.failure.as_mut() {
                    f.2.push_str(&s);
                }
            }
            _ => {}
        }
    }
    p
}

fn num(m: &BTreeMap<String, String>, k: &str) -> usize {
    m.get(k)
        .unwrap_or_else(|| panic!("attribute {k} missing"))
        .parse()
        .expect("number")
}

/// Checks the JUnit file of `trace` against its verdict JSON.
fn verify_against_report(trace: &Path, junit: &Path, extra: &[&str]) -> Parsed {
    let (v, code) = check_json(trace, extra);
    let mut args = vec![
        "check",
        trace.to_str().expect("p"),
        "--junit",
        junit.to_str().expect("p"),
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert_eq!(o.status.code(), Some(code), "same exit code with --junit");
    assert!(!Path::new(&format!("{}.partial", junit.display())).exists());
    let xml = std::fs::read_to_string(junit).expect("junit written");
    let p = parse(&xml);
    let devices = v["devices"].as_object().expect("devices");
    // One suite per device plus the trace suite.
    assert_eq!(p.suites.len(), devices.len() + 1, "{}", trace.display());
    // Root counts are the sums.
    let cases: usize = p.suites.iter().map(|s| s.1.len()).sum();
    let fails: usize = p
        .suites
        .iter()
        .flat_map(|s| &s.1)
        .filter(|c| c.2.failure.is_some())
        .count();
    let skips: usize = p
        .suites
        .iter()
        .flat_map(|s| &s.1)
        .filter(|c| c.2.skipped.is_some())
        .count();
    assert_eq!(num(&p.root, "tests"), cases);
    assert_eq!(num(&p.root, "failures"), fails);
    assert_eq!(num(&p.root, "skipped"), skips);
    for (a, cs) in &p.suites {
        assert_eq!(num(a, "tests"), cs.len());
        assert_eq!(
            num(a, "failures"),
            cs.iter().filter(|c| c.2.failure.is_some()).count()
        );
    }
    // Every violation appears in exactly one failure, with its rule, t and line.
    let violations = v["violations"].as_array().expect("violations");
    let mut in_failures = 0;
    for s in &p.suites {
        for (_, _, c) in &s.1 {
            if let Some((_, _, text)) = &c.failure {
                in_failures += text.lines().count();
            }
        }
    }
    assert_eq!(in_failures, violations.len(), "{}", trace.display());
    for viol in violations {
        let rule = viol["rule"].as_str().expect("rule");
        let needle = format!("{rule} t={} line {}", viol["t"], viol["line"]);
        let dev = viol["dev"].as_str();
        let hit = p.suites.iter().any(|(a, cs)| {
            dev.is_none_or(|d| a["name"].ends_with(&format!(": {d}")))
                && cs.iter().any(|(_, _, c)| {
                    c.failure.as_ref().is_some_and(|f| {
                        f.2.lines().any(|l| {
                            l.starts_with(&needle)
                                && l.contains(viol["detail"].as_str().expect("detail"))
                        })
                    })
                })
        });
        assert!(
            hit,
            "{}: violation {needle} not in its device's failures",
            trace.display()
        );
    }
    // Device suites have the three rule families.
    for (a, cs) in &p.suites[..devices.len()] {
        let names: Vec<&str> = cs.iter().map(|c| c.1.as_str()).collect();
        assert_eq!(
            names,
            ["transitions", "quiesce", "ordering"],
            "{}",
            a["name"]
        );
    }
    // Blind spots are skipped cases (never passes, never failures).
    for b in v["blind_spots"].as_array().expect("blind spots") {
        let b = b.as_str().expect("str");
        let hit = p.suites.iter().flat_map(|s| &s.1).any(|c| {
            c.2.skipped
                .as_deref()
                .is_some_and(|m| m.contains(&format!("blind spot {b}")))
        });
        assert!(hit, "blind spot {b} not skipped");
    }
    let verdict = v["verdict"].as_str().expect("verdict");
    assert_eq!(verdict == "fail", fails > 0);
    assert_eq!(
        verdict == "pass",
        fails == 0 && skips == 0,
        "pass means no failure, no skip"
    );
    p
}

#[test]
fn junit_matches_the_report_on_every_fixture() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, f) in fixtures().iter().enumerate() {
        let junit = dir.path().join(format!("{i}.xml"));
        if check_json(f, &[]).1 == 3 {
            // Unusable input: the JUnit file has one test case in error saying why.
            let o = run(&[
                "check",
                f.to_str().expect("p"),
                "--junit",
                junit.to_str().expect("p"),
            ]);
            assert_eq!(o.status.code(), Some(3));
            let xml = std::fs::read_to_string(&junit).expect("junit written for unusable input");
            let mut r = Reader::from_str(&xml);
            let mut errors = 0;
            loop {
                match r
                    .read_event()
                    .unwrap_or_else(|e| panic!("{}: {e}", f.display()))
                {
                    Event::Eof => break,
                    Event::Start(e) if e.name().as_ref() == b"error" => errors += 1,
                    _ => {}
                }
            }
            assert_eq!(errors, 1, "{}", f.display());
            continue;
        }
        verify_against_report(f, &junit, &[]);
    }
}

#[test]
fn junit_rich_trace_families_escaping_and_blind_spots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = write(dir.path(), "rich <&\">.jsonl", RICH);
    let p = verify_against_report(&t, &dir.path().join("rich.xml"), &[]);
    let fam_fail = |dev: &str, fam: &str| {
        p.suites
            .iter()
            .find(|s| s.0["name"].ends_with(dev))
            .unwrap_or_else(|| panic!("suite for {dev}"))
            .1
            .iter()
            .find(|c| c.1 == fam)
            .and_then(|c| c.2.failure.as_ref().map(|f| f.0.clone()))
    };
    assert_eq!(
        fam_fail("0000:00:03.0", "quiesce").as_deref(),
        Some("irq-after-quiesce")
    );
    assert_eq!(
        fam_fail("0000:00:03.0", "ordering").as_deref(),
        Some("stop-while-peer-running")
    );
    assert_eq!(
        fam_fail("0000:00:03.0", "transitions").as_deref(),
        Some("illegal-arc")
    );
    assert_eq!(
        fam_fail("0000:00:04.0", "transitions").as_deref(),
        Some("set-failed")
    );
    assert_eq!(fam_fail("mdev-1", "quiesce"), None);
    // The trace name with XML specials survived escaping.
    assert!(p.suites[0].0["name"].starts_with("rich <&\">.jsonl: "));

    // A trace without DMA evidence and cut short: skipped, inconclusive, exit 2.
    let blind = r#"{"migscope_trace":1,"clock":"monotonic_ns","sources":{"transitions":"ok","irq":"ok"}}
{"t":0,"ev":"device","dev":"0000:00:03.0","flags":["STOP_COPY","P2P"],"ctx":"vm1"}
{"t":10,"ev":"set","dev":"0000:00:03.0","to":"RUNNING_P2P"}
{"t":20,"ev":"set_done","dev":"0000:00:03.0","to":"RUNNING_P2P","ret":0}
{"t":30,"ev":"lost","n":1,"source":"ringbuf"}
"#;
    let t = write(dir.path(), "blind.jsonl", blind);
    let (v, code) = check_json(&t, &[]);
    let p = verify_against_report(&t, &dir.path().join("blind.xml"), &[]);
    assert!(v["violations"].as_array().expect("v").is_empty(), "{v}");
    assert_eq!(code, 2, "{v}");
    // truncated, lost and dma on the trace suite, and the device's quiesce case.
    assert_eq!(num(&p.root, "skipped"), 4, "{v}");
    assert_eq!(num(&p.root, "failures"), 0);
}

#[test]
fn junit_unwritable_path_is_unusable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = write(dir.path(), "x.jsonl", RICH);
    let o = run(&[
        "check",
        f.to_str().expect("p"),
        "--junit",
        "/nonexistent-dir/x.xml",
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent-dir/x.xml"));
}

/// The JUnit dialect GitLab, Jenkins and GitHub reporters read (Ant's XML formatter with the
/// `skipped` element Jenkins added), written down as an XML schema for `xmllint --schema`.
const JUNIT_XSD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" elementFormDefault="qualified">
  <xs:simpleType name="count">
    <xs:restriction base="xs:nonNegativeInteger"/>
  </xs:simpleType>
  <xs:simpleType name="seconds">
    <xs:restriction base="xs:decimal"><xs:minInclusive value="0"/></xs:restriction>
  </xs:simpleType>
  <xs:complexType name="outcome" mixed="true">
    <xs:attribute name="message" type="xs:string"/>
    <xs:attribute name="type" type="xs:string"/>
  </xs:complexType>
  <xs:element name="testsuites">
    <xs:complexType>
      <xs:sequence>
        <xs:element ref="testsuite" minOccurs="0" maxOccurs="unbounded"/>
      </xs:sequence>
      <xs:attribute name="name" type="xs:string"/>
      <xs:attribute name="tests" type="count" use="required"/>
      <xs:attribute name="failures" type="count" use="required"/>
      <xs:attribute name="errors" type="count" use="required"/>
      <xs:attribute name="skipped" type="count"/>
      <xs:attribute name="time" type="seconds"/>
    </xs:complexType>
  </xs:element>
  <xs:element name="testsuite">
    <xs:complexType>
      <xs:sequence>
        <xs:element name="properties" minOccurs="0">
          <xs:complexType>
            <xs:sequence>
              <xs:element name="property" minOccurs="0" maxOccurs="unbounded">
                <xs:complexType>
                  <xs:attribute name="name" type="xs:string" use="required"/>
                  <xs:attribute name="value" type="xs:string" use="required"/>
                </xs:complexType>
              </xs:element>
            </xs:sequence>
          </xs:complexType>
        </xs:element>
        <xs:element name="testcase" minOccurs="0" maxOccurs="unbounded">
          <xs:complexType>
            <xs:sequence>
              <xs:choice minOccurs="0">
                <xs:element name="skipped" type="outcome"/>
                <xs:element name="failure" type="outcome"/>
                <xs:element name="error" type="outcome"/>
              </xs:choice>
              <xs:element name="system-out" type="xs:string" minOccurs="0"/>
              <xs:element name="system-err" type="xs:string" minOccurs="0"/>
            </xs:sequence>
            <xs:attribute name="name" type="xs:string" use="required"/>
            <xs:attribute name="classname" type="xs:string" use="required"/>
            <xs:attribute name="time" type="seconds"/>
          </xs:complexType>
        </xs:element>
        <xs:element name="system-out" type="xs:string" minOccurs="0"/>
        <xs:element name="system-err" type="xs:string" minOccurs="0"/>
      </xs:sequence>
      <xs:attribute name="name" type="xs:string" use="required"/>
      <xs:attribute name="id" type="count"/>
      <xs:attribute name="tests" type="count" use="required"/>
      <xs:attribute name="failures" type="count" use="required"/>
      <xs:attribute name="errors" type="count" use="required"/>
      <xs:attribute name="skipped" type="count"/>
      <xs:attribute name="time" type="seconds"/>
    </xs:complexType>
  </xs:element>
</xs:schema>
"#;

#[test]
fn junit_validates_against_the_schema_with_xmllint() {
    if std::process::Command::new("xmllint")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: xmllint not installed (Debian: apt-get install libxml2-utils)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let xsd = write(dir.path(), "junit.xsd", JUNIT_XSD);
    let mut inputs = fixtures();
    inputs.push(write(dir.path(), "rich <&>.jsonl", RICH));
    let mut validated = 0;
    for (i, f) in inputs.iter().enumerate() {
        let junit = dir.path().join(format!("{i}.xml"));
        let o = run(&[
            "check",
            f.to_str().expect("p"),
            "--junit",
            junit.to_str().expect("p"),
        ]);
        assert!(o.status.code().is_some_and(|c| c <= 3));
        let v = std::process::Command::new("xmllint")
            .args(["--noout", "--schema"])
            .arg(&xsd)
            .arg(&junit)
            .output()
            .expect("run xmllint");
        assert!(
            v.status.success(),
            "{}: {}\n{}",
            f.display(),
            String::from_utf8_lossy(&v.stderr),
            std::fs::read_to_string(&junit).unwrap_or_default()
        );
        validated += 1;
    }
    eprintln!("{validated} JUnit files valid against the schema");
}

#[test]
fn junit_skips_the_quiesce_family_only_for_the_device_no_dma_source_covered() {
    let dir = tempfile::tempdir().expect("tempdir");
    let f = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rules/coverage-mdev-beside-pci.jsonl");
    let p = verify_against_report(&f, &dir.path().join("mdev.xml"), &[]);
    let quiesce = |dev: &str| {
        let s = p
            .suites
            .iter()
            .find(|s| s.0["name"].ends_with(dev))
            .unwrap_or_else(|| panic!("suite for {dev}"));
        let c =
            &s.1.iter()
                .find(|c| c.1 == "quiesce")
                .expect("quiesce case")
                .2;
        (c.failure.is_some(), c.skipped.is_some())
    };
    // The vGPU's mdev_dma saw its DMA: proven. The VF beside it: nothing saw it.
    assert_eq!(
        quiesce("83b8f4f2-509f-382f-3c1e-e6bfe0fa1001"),
        (false, false)
    );
    assert_eq!(quiesce("0000:3b:00.1"), (false, true));
}
