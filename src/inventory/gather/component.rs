//! `AWS:AWSComponent`: the installed packages upstream counts as AWS components (its
//! `selectAwsApps` names and the `aws-apitools-`/`aws-amitools-` families), plus ssm-lite itself
//! under the agent's name when no `amazon-ssm-agent` package is installed: the console shows the
//! agent of the node there.

use super::application::architecture;
use super::{Entry, GatherError, Host, entry_of};

const AGENT: &str = "amazon-ssm-agent";
/// Lower-cased names upstream's `componentType` marks as AWS components.
const AWS_APPS: [&str; 7] = [
    AGENT,
    "amazon ssm agent",
    "com.amazon.aws.ssm",
    "aws tools for windows",
    "ec2configservice",
    "aws-cfn-bootstrap",
    "aws pv drivers",
];

pub(super) fn gather(host: &Host<'_>) -> Result<Vec<Entry>, GatherError> {
    let mut out: Vec<Entry> = super::application::gather(host)?
        .into_iter()
        .filter(|e| e.get("Name").is_some_and(|n| is_aws_component(n)))
        .collect();
    if !out
        .iter()
        .any(|e| e.get("Name").is_some_and(|n| n == AGENT))
    {
        out.insert(0, agent(host.agent_version));
    }
    Ok(out)
}

fn is_aws_component(name: &str) -> bool {
    let name = name.trim().to_ascii_lowercase();
    AWS_APPS.contains(&name.as_str())
        || name.contains("aws-apitools-")
        || name.contains("aws-amitools-")
}

/// The agent's entry as its own package would give it (the `.deb`'s Maintainer).
fn agent(version: &str) -> Entry {
    entry_of(&[
        ("Name", AGENT),
        ("Publisher", "Amazon.com, Inc."),
        ("Version", version),
        ("Architecture", &architecture(std::env::consts::ARCH)),
    ])
}

#[cfg(test)]
mod tests {
    use super::super::testing::{root, write};
    use super::*;

    const STATUS: &str = "Package: aws-cfn-bootstrap\nStatus: install ok installed\nVersion: 2.0-1\n\
        Architecture: all\n\nPackage: curl\nStatus: install ok installed\nVersion: 7.88\n\
        Architecture: amd64\n\nPackage: aws-apitools-ec2\nStatus: install ok installed\n\
        Version: 1.7\nArchitecture: all\n";

    #[test]
    fn aws_packages_and_the_agent_itself() {
        let root = root("component");
        write(&root, "/var/lib/dpkg/status", STATUS);
        let host = Host {
            root: &root,
            agent_version: "3.3.1142.0",
        };
        let names: Vec<String> = gather(&host)
            .unwrap()
            .into_iter()
            .map(|e| e["Name"].clone())
            .collect();
        assert_eq!(names, [AGENT, "aws-cfn-bootstrap", "aws-apitools-ec2"]);
        let me = &gather(&host).unwrap()[0];
        assert_eq!(me["Version"], "3.3.1142.0");
        assert_eq!(me["Architecture"], architecture(std::env::consts::ARCH));
    }

    #[test]
    fn an_installed_agent_package_is_not_doubled() {
        let root = root("component-pkg");
        let pkg = "\nPackage: amazon-ssm-agent\nStatus: install ok installed\nVersion: 3.3.1\n\
                   Architecture: amd64\nMaintainer: Amazon.com, Inc. <ec2-ssm-feedback@amazon.com>\n";
        write(&root, "/var/lib/dpkg/status", &format!("{STATUS}{pkg}"));
        let host = Host {
            root: &root,
            agent_version: "0.1.0",
        };
        let got = gather(&host).unwrap();
        let agents: Vec<&Entry> = got.iter().filter(|e| e["Name"] == AGENT).collect();
        assert_eq!(agents.len(), 1, "{got:?}");
        assert_eq!(agents[0]["Version"], "3.3.1");
    }
}
