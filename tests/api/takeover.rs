//! Pre-registration takeover: someone signs up an address that is not theirs, hoping its owner
//! confirms their sign-up. A link confirms exactly the sign-up that sent it, even when the
//! owner's confirmation and the foreign sign-up arrive at the same moment.

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use entity::users;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

use crate::helpers::{Backend, TestApp, on_both_backends};

on_both_backends!(a_confirmation_racing_a_foreign_sign_up_activates_the_password_of_its_own_link);

const OWNER: &str = "the owner's own long passphrase";
const STRANGER: &str = "attacker chosen secret words";

async fn a_confirmation_racing_a_foreign_sign_up_activates_the_password_of_its_own_link(
    backend: Backend,
) {
    let app = TestApp::spawn_with(
        backend,
        &[
            "--resend-cooldown",
            "0s",
            "--resend-hourly-limit",
            "1000",
            "--ip-rate-limit",
            "0",
        ],
    )
    .await;
    for trial in 0..12 {
        let email = format!("race{trial}@example.com");
        let payload = app.register(&email, OWNER, None).await;
        assert_eq!(payload["accepted"], true, "{payload}");
        let link = app.smtp.next_mail().await.token();

        // Every answer is checked for top-level errors by the helpers: a deadlock or any other
        // internal failure fails the test.
        let (confirmed, foreign) =
            tokio::join!(app.confirm(&link), app.register(&email, STRANGER, None));
        assert_eq!(foreign["accepted"], true, "{foreign}");
        assert_eq!(
            confirmed["user"]["confirmed"], true,
            "trial {trial}: {confirmed}"
        );
        let _foreign_mail = app.smtp.next_mail().await;

        let user = users::Entity::find()
            .filter(users::Column::EmailKey.eq(email.as_str()))
            .one(&app.db)
            .await
            .unwrap()
            .unwrap();
        let hash = PasswordHash::new(&user.password_hash).unwrap();
        assert!(
            Argon2::default()
                .verify_password(OWNER.as_bytes(), &hash)
                .is_ok(),
            "trial {trial}: the owner's link activated another password"
        );
    }
}
