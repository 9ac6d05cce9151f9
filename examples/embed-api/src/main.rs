//! The lab's API: `cargo run -p pao-example-embed-api`, then
//! `curl -H 'X-User: ada' http://127.0.0.1:8080/items`. `LAB_API_ADDR` changes the address.

use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::var("LAB_API_ADDR").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let catalog = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("catalog");
    let pao = pao_example_embed_api::engine(&catalog)?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let ctrl_c = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        ctrl_c.cancel();
    });
    pao_example_embed_api::serve(listener, pao, stop).await?;
    Ok(())
}
