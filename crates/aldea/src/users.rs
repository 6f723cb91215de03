//! `aldea users …`: operators bootstrap platform admins and reset passwords (there is no email
//! sending: the reset token is printed for the operator to hand over). The rules are the
//! platform's (`aldea_platform::set_admin`, `issue_password_reset`).

use std::process::ExitCode;

use clap::Subcommand;

use crate::{keys, output, stores, Settings};

#[derive(Debug, Subcommand)]
pub(crate) enum UsersCommand {
    /// Make the user with this email a platform admin (may add credit to any organization).
    Admin {
        /// The account's email.
        email: String,
        /// Take the admin right away instead.
        #[arg(long)]
        revoke: bool,
    },
    /// Print a one-time token (valid for an hour) that sets a new password with
    /// `POST /v1/auth/reset-password {"token", "password"}`; the user's sessions end when it is used.
    ResetPassword {
        /// The account's email.
        email: String,
    },
}

pub(crate) fn run(
    settings: &Settings,
    database: &stores::DatabaseArgs,
    command: &UsersCommand,
) -> anyhow::Result<ExitCode> {
    keys::runtime()?.block_on(async {
        let accounts = stores::open_database(settings, database).await?.accounts;
        match command {
            UsersCommand::Admin { email, revoke } => {
                let user = aldea_platform::set_admin(accounts.as_ref(), email, !revoke).await?;
                let now = if user.is_admin { "is now a platform admin" } else { "is no longer a platform admin" };
                output::info(&format!("{} ({}) {now}", user.email, user.id));
            }
            UsersCommand::ResetPassword { email } => {
                let now = aldea_store::unix_now();
                let (user, token) = aldea_platform::issue_password_reset(accounts.as_ref(), email, now).await?;
                output::info(&format!(
                    "reset token for {} ({}), valid for {} minutes, shown once:",
                    user.email,
                    user.id,
                    aldea_platform::RESET_TTL_SECONDS / 60
                ));
                output::result_line(&token);
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
