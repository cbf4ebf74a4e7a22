//! An HTTP component whose answer comes from an imported interface that
//! another component provides (`[component.dependent.dependencies]`).

use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

wit_bindgen::generate!({
    inline: "
        package edge-test:dependent;
        world dependent {
            import edge-test:greeter/greet@0.1.0;
        }
    ",
    path: "../greeter/wit",
    generate_all,
});

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let name = req.uri().query().unwrap_or("world").to_string();
    edge_test::greeter::greet::greet(&name)
}
