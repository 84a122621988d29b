// `sqlx::migrate!` embeds ../migrations: rebuild when a migration is added or changed.
fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
