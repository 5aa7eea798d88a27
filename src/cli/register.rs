//! `ssm-lite register`: the terminal around `onprem::register`, which does the work.

use ssm_lite::onprem::fingerprint::Hardware;
use ssm_lite::onprem::register::{self, AMAZON_SSM_AGENT_VAULT, RegisterArgs};
use ssm_lite::onprem::store::RegistrationStore;
use std::io::IsTerminal;
use std::path::Path;

/// What `ssm-lite register` does with parsed arguments; the exit code (0 ok, 1 failure).
pub fn register(args: &RegisterArgs) -> u8 {
    let store = RegistrationStore::new(&args.state_dir);
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let result = register::run(
        args,
        &store,
        &Hardware::system(),
        args.vault_dir
            .as_deref()
            .unwrap_or(Path::new(AMAZON_SSM_AGENT_VAULT)),
        &mut |yes| {
            register::may_replace(yes, interactive, &mut stdin.lock(), &mut std::io::stderr())
        },
    );
    match result {
        Ok(Some(instance_id)) => {
            println!("{instance_id}");
            eprintln!(
                "ssm-lite register: registered as {instance_id}. An agent still waiting for an \
                 identity takes it up within 5 minutes; otherwise (re)start it: \
                 `systemctl restart ssm-lite` or `service ssm-lite restart`"
            );
            0
        }
        Ok(None) => 0,
        Err(e) => {
            eprintln!("ssm-lite register: {e}");
            1
        }
    }
}
