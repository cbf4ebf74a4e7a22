//! `fermyon:spin/llm@2.0.0`, forwarded to the `[llm_compute]` backend with
//! exactly the protocol Spin's `remote_http` backend speaks (`/infer` and
//! `/embed`, or the OpenAI API when `api_type = "open_ai"`), so a gpu-host
//! pool serves Spin and edge-host alike.

use crate::factors::bindings::llm::{
    self, EmbeddingsResult, EmbeddingsUsage, Error, InferencingParams, InferencingResult,
    InferencingUsage,
};
use crate::runtime_config::{LlmApiType, LlmComputeConfig};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

/// The configured backend, shared by every instance.
pub struct LlmBackend {
    client: reqwest::Client,
    config: Option<LlmComputeConfig>,
}

impl LlmBackend {
    pub fn new(config: Option<LlmComputeConfig>) -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(600))
            .build()
            .expect("reqwest client with static settings");
        Self { client, config }
    }
}

/// Per-instance state: the models this component may use.
pub struct LlmCtx {
    pub granted: Arc<HashSet<String>>,
    pub backend: Arc<LlmBackend>,
}

/// The parameters Spin sends when a component passes none.
pub const DEFAULT_PARAMS: InferencingParams = InferencingParams {
    max_tokens: 100,
    repeat_penalty: 1.1,
    repeat_penalty_last_n_token_count: 64,
    temperature: 0.8,
    top_k: 40,
    top_p: 0.9,
};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InferOptions {
    max_tokens: u32,
    repeat_penalty: f32,
    repeat_penalty_last_n_token_count: u32,
    temperature: f32,
    top_k: u32,
    top_p: f32,
}

#[derive(Serialize)]
struct InferRequest<'a> {
    model: &'a str,
    prompt: &'a str,
    options: InferOptions,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InferResponse {
    text: String,
    usage: InferUsage,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InferUsage {
    prompt_token_count: u32,
    generated_token_count: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EmbedResponse {
    embeddings: Vec<Vec<f32>>,
    usage: EmbedUsage,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EmbedUsage {
    prompt_token_count: u32,
}

#[derive(Deserialize)]
struct OpenAiChat {
    choices: Vec<OpenAiChoice>,
    usage: OpenAiUsage,
}
#[derive(Deserialize)]
struct OpenAiChoice {
    message: OpenAiMessage,
}
#[derive(Deserialize)]
struct OpenAiMessage {
    #[serde(default)]
    content: Option<String>,
}
#[derive(Deserialize)]
struct OpenAiUsage {
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}
#[derive(Deserialize)]
struct OpenAiEmbeddings {
    data: Vec<OpenAiEmbedding>,
    usage: OpenAiUsage,
}
#[derive(Deserialize)]
struct OpenAiEmbedding {
    embedding: Vec<f32>,
}

impl LlmCtx {
    fn check_model(&self, model: &str) -> Result<(&reqwest::Client, &LlmComputeConfig), Error> {
        if !self.granted.contains(model) {
            return Err(Error::ModelNotSupported);
        }
        match &self.backend.config {
            Some(cfg) => Ok((&self.backend.client, cfg)),
            None => Err(Error::RuntimeError(
                "no LLM backend is configured: add [llm_compute] type = \"remote_http\" to the runtime config"
                    .into(),
            )),
        }
    }

    pub async fn infer(
        &self,
        model: &str,
        prompt: &str,
        params: Option<InferencingParams>,
    ) -> Result<InferencingResult, Error> {
        let (client, LlmComputeConfig::RemoteHttp { url, auth_token, api_type }) =
            self.check_model(model)?;
        let p = params.unwrap_or(DEFAULT_PARAMS);
        match api_type {
            LlmApiType::Default => {
                let body = InferRequest {
                    model,
                    prompt,
                    options: InferOptions {
                        max_tokens: p.max_tokens,
                        repeat_penalty: p.repeat_penalty,
                        repeat_penalty_last_n_token_count: p.repeat_penalty_last_n_token_count,
                        temperature: p.temperature,
                        top_k: p.top_k,
                        top_p: p.top_p,
                    },
                };
                let res: InferResponse =
                    post(client, url, "/infer", auth_token, serde_json::to_vec(&body).unwrap(), false)
                        .await?;
                Ok(InferencingResult {
                    text: res.text,
                    usage: InferencingUsage {
                        prompt_token_count: res.usage.prompt_token_count,
                        generated_token_count: res.usage.generated_token_count,
                    },
                })
            }
            LlmApiType::OpenAi => {
                let body = json!({
                    "model": model,
                    "messages": [{"role": "user", "content": prompt}],
                    "max_completion_tokens": p.max_tokens,
                    "frequency_penalty": p.repeat_penalty,
                    "temperature": p.temperature,
                    "top_p": p.top_p,
                });
                let res: OpenAiChat = post(
                    client,
                    url,
                    "/v1/chat/completions",
                    auth_token,
                    serde_json::to_vec(&body).unwrap(),
                    true,
                )
                .await?;
                let text = res
                    .choices
                    .into_iter()
                    .next()
                    .and_then(|c| c.message.content)
                    .unwrap_or_default();
                Ok(InferencingResult {
                    text,
                    usage: InferencingUsage {
                        prompt_token_count: res.usage.prompt_tokens,
                        generated_token_count: res.usage.completion_tokens,
                    },
                })
            }
        }
    }

    pub async fn embed(&self, model: &str, input: Vec<String>) -> Result<EmbeddingsResult, Error> {
        let (client, LlmComputeConfig::RemoteHttp { url, auth_token, api_type }) =
            self.check_model(model)?;
        let body = serde_json::to_vec(&json!({ "input": input, "model": model })).unwrap();
        match api_type {
            LlmApiType::Default => {
                let res: EmbedResponse = post(client, url, "/embed", auth_token, body, false).await?;
                Ok(EmbeddingsResult {
                    embeddings: res.embeddings,
                    usage: EmbeddingsUsage { prompt_token_count: res.usage.prompt_token_count },
                })
            }
            LlmApiType::OpenAi => {
                let res: OpenAiEmbeddings =
                    post(client, url, "/v1/embeddings", auth_token, body, true).await?;
                Ok(EmbeddingsResult {
                    embeddings: res.data.into_iter().map(|d| d.embedding).collect(),
                    usage: EmbeddingsUsage { prompt_token_count: res.usage.prompt_tokens },
                })
            }
        }
    }
}

/// POSTs a JSON body to `path` at the backend's origin (Spin drops any path
/// prefix of the configured URL) and decodes the JSON answer.
async fn post<R: for<'de> Deserialize<'de>>(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    token: &str,
    body: Vec<u8>,
    json_content_type: bool,
) -> Result<R, Error> {
    let base = reqwest::Url::parse(base)
        .map_err(|e| Error::RuntimeError(format!("invalid llm_compute url {base:?}: {e}")))?;
    let url = base
        .join(path)
        .map_err(|e| Error::RuntimeError(format!("invalid llm_compute url: {e}")))?;
    let mut req = client.post(url).header("authorization", format!("bearer {token}")).body(body);
    if json_content_type {
        req = req.header("content-type", "application/json");
    }
    let res = req
        .send()
        .await
        .map_err(|e| Error::RuntimeError(format!("LLM backend unreachable: {e}")))?;
    let status = res.status();
    if !status.is_success() {
        return Err(Error::RuntimeError(format!("LLM backend answered {status}")));
    }
    res.json::<R>()
        .await
        .map_err(|e| Error::RuntimeError(format!("LLM backend sent an unexpected response: {e}")))
}

impl llm::Host for LlmCtx {
    async fn infer(
        &mut self,
        model: String,
        prompt: String,
        params: Option<InferencingParams>,
    ) -> wasmtime::Result<Result<InferencingResult, Error>> {
        Ok(LlmCtx::infer(self, &model, &prompt, params).await)
    }

    async fn generate_embeddings(
        &mut self,
        model: String,
        text: Vec<String>,
    ) -> wasmtime::Result<Result<EmbeddingsResult, Error>> {
        Ok(self.embed(&model, text).await)
    }
}
