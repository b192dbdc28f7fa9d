//! The API across a cluster: each node's token is its own, and a member of
//! the mesh gains no access to another member's API by being one.

use weft_node::api::client::ApiClient;
use weft_protocol::TagName;
use weft_tests::{Cluster, ClusterOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nodes_token_opens_only_its_own_api() {
    let cluster = Cluster::start(2, ClusterOptions::default())
        .await
        .expect("cluster");
    let (a, b) = (cluster.node(0), cluster.node(1));
    let token_a = a.home().api_token().expect("read").expect("token a");
    let token_b = b.home().api_token().expect("read").expect("token b");
    assert_ne!(token_a, token_b, "every node makes its own token");
    let (id, _) = b
        .store()
        .add_bytes(b"on b", weft_node::store::records::BlobKind::Raw)
        .expect("add");
    // node a's token at node b's API: refused, nothing set
    let resp = reqwest::Client::new()
        .put(format!("{}/api/v1/tags/x/y:v1", b.api_url()))
        .bearer_auth(&token_a)
        .json(&serde_json::json!({ "ref": id.to_string() }))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    let name = TagName::new("x/y:v1").expect("tag");
    assert_eq!(b.store().tag(&name).expect("tag"), None);
    // node b's own client, built from its home as the CLI does, is let in
    let client = ApiClient::from_home(b.home()).expect("client");
    let resp = client
        .request(reqwest::Method::PUT, "/api/v1/tags/x/y:v1")
        .json(&serde_json::json!({ "ref": id.to_string() }))
        .send()
        .await
        .expect("send");
    assert!(resp.status().is_success(), "{}", resp.status());
    assert_eq!(b.store().tag(&name).expect("tag"), Some(id));
    cluster.stop().await;
}
