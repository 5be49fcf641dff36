//! The loop itself: call the model, run the tools it asks for — flue's,
//! the agent's own, `activate_skill`, and `task`, which runs a sub-agent's
//! loop on the same sandbox — and feed the results back, until it answers.
//!
//! One [`Budget`] per prompt: every turn, a sub-agent's too, counts against
//! the prompt's `max-turns`, and every token and dollar is added to the
//! prompt's usage. Sub-agents nest at most [`MAX_TASK_DEPTH`] deep; their
//! events come between a `task-started` and its `task-finished`.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::Value;

use super::agent_tools::{AgentTool, ToolHandler};
use super::prices::Cost;
use super::provider::{Provider, TurnRequest};
use super::workspace::{self, Skill, SubAgent};
use super::{
    DEFAULT_MAX_TURNS, MAX_AGENTS_MD, Message, ModelError, PromptAnswer, PromptOptions, TaskRequest, TextEvents,
    ToolResult, Usage, answer_json, caps, conversation_bytes, read_start, tools, without_key,
};
use crate::events::{Event, EventLog, millis};
use crate::journal::{self, Journal};
use crate::sandbox::session::{Session, format_bytes};

/// How deep sub-agents nest (a sub-agent's sub-agent is 2).
pub const MAX_TASK_DEPTH: u32 = 4;
/// The names of the tools flue adds beside the six.
const TASK: &str = "task";
const ACTIVATE_SKILL: &str = "activate_skill";

/// Where a prompt runs and what it calls on.
pub struct Prompting<'a> {
    /// The prompt's model.
    pub provider: &'a Provider,
    /// The run's configuration: a sub-agent's own model is configured from it.
    pub config: &'a HashMap<String, String>,
    /// The session the model works in.
    pub session: &'a Session,
    /// The run's events.
    pub events: &'a EventLog,
    /// The run's journal, if it keeps one.
    pub journal: Option<&'a Journal>,
    /// Runs the agent's own tools.
    pub handler: &'a mut dyn ToolHandler,
}

/// Run one prompt on `conversation` (which keeps growing: a second prompt
/// continues it).
///
/// With a journal, the system prompt, each model turn and each tool call
/// are recorded — or, in a resumed run, answered from it (see
/// [`crate::journal`]). The outer error ends the run: a journal that cannot
/// go on, or an agent tool's handler that trapped.
pub async fn prompt(
    ctx: Prompting<'_>,
    conversation: &mut Vec<Message>,
    text: String,
    options: &PromptOptions,
) -> wasmtime::Result<Result<PromptAnswer, ModelError>> {
    let (provider, session) = (ctx.provider, ctx.session);
    let mut run = Conversing::new(ctx, options);
    let done = run.converse(provider, session, conversation, text, options, 0).await;
    run.answer(provider, done)
}

/// Run a sub-agent (`session.task`): a fresh conversation in its `cwd`
/// (relative to the session's), its events nested under a `task-started`.
/// A named sub-agent (`.agents/agents/<name>.md` in the session's working
/// directory) gives the instructions, model and thinking the request
/// leaves out.
pub async fn task(ctx: Prompting<'_>, request: &TaskRequest) -> wasmtime::Result<Result<PromptAnswer, ModelError>> {
    let (provider, session, config) = (ctx.provider, ctx.session, ctx.config);
    let child = match child_session(session, request.cwd.as_deref()) {
        Ok(child) => child,
        Err(message) => return Ok(Err(ModelError::InvalidInput(message))),
    };
    let mut options = request.options.clone();
    let mut own_provider = None;
    let name = request.agent.as_deref().unwrap_or(workspace::GENERAL_AGENT);
    if name != workspace::GENERAL_AGENT {
        let agents = journal::through(ctx.journal, || "sub-agents".into(), workspace::sub_agents(session))
            .await
            .map_err(wasmtime::Error::new)?;
        let Some(agent) = agents.into_iter().find(|a| a.name == name) else {
            return Ok(Err(ModelError::InvalidInput(format!(
                "there is no sub-agent {name:?}: name general, or one of {}/<name>.md in {}",
                workspace::AGENTS_DIR,
                session.cwd()
            ))));
        };
        if options.system.is_none() && !agent.instructions.is_empty() {
            options.system = Some(agent.instructions);
        }
        options.thinking = options.thinking.or(agent.thinking);
        if let (None, Some(model)) = (&request.model, &agent.model) {
            match Provider::from_config(model, config) {
                Ok(own) => own_provider = Some(own),
                Err(err) => return Ok(Err(err)),
            }
        }
    }
    let provider = own_provider.as_ref().unwrap_or(provider);
    let mut run = Conversing::new(ctx, &options);
    let done = run.nested(provider, &child, request.prompt.clone(), &options, (name, ""), 1).await;
    run.answer(provider, done)
}

/// A session in `cwd`, relative to `session`'s.
fn child_session(session: &Session, cwd: Option<&str>) -> Result<Session, String> {
    let cwd = match cwd {
        Some(cwd) => session.resolve(cwd).map_err(|err| err.message)?,
        None => session.cwd().to_string(),
    };
    Session::new(session.sandbox().clone(), Some(&cwd), session.events().clone()).map_err(|err| err.message)
}

/// Why a loop stopped without an answer.
enum Stopped {
    /// The prompt fails with this.
    Model(ModelError),
    /// The run ends with this.
    Halt(wasmtime::Error),
}

impl From<ModelError> for Stopped {
    fn from(err: ModelError) -> Self {
        Stopped::Model(err)
    }
}

impl From<journal::JournalError> for Stopped {
    fn from(err: journal::JournalError) -> Self {
        Stopped::Halt(wasmtime::Error::new(err))
    }
}

/// What one prompt has spent, sub-agents included.
struct Budget {
    /// Turns allowed.
    limit: u32,
    /// Turns taken.
    used: u32,
    usage: Usage,
    cost: Cost,
    /// A turn's model had no known price.
    unpriced: bool,
}

impl Budget {
    fn spend(&mut self, provider: &Provider, usage: &Usage) {
        self.used += 1;
        // Counts from the provider: any value, never an overflow.
        self.usage.input = self.usage.input.saturating_add(usage.input);
        self.usage.output = self.usage.output.saturating_add(usage.output);
        if let Some(read) = usage.cache_read {
            self.usage.cache_read = Some(self.usage.cache_read.unwrap_or(0).saturating_add(read));
        }
        match provider.cost(usage) {
            Some(cost) => {
                self.cost.input += cost.input;
                self.cost.output += cost.output;
                self.cost.cache_read += cost.cache_read;
                self.cost.total += cost.total;
            }
            None => self.unpriced = true,
        }
    }
}

/// The tools one loop offers.
struct Offered {
    /// flue's six, by name.
    builtin: Vec<String>,
    /// Whether `task` is offered, and the sub-agents it may name.
    task: Option<Vec<SubAgent>>,
    /// The skills `activate_skill` loads (none: not offered).
    skills: Vec<Skill>,
}

/// What a loop prepares once, journaled as one step so a resumed run sees
/// the same prompt and the same skills and sub-agents.
#[derive(serde::Serialize, serde::Deserialize)]
struct Prepared {
    system: String,
    skills: Vec<Skill>,
    agents: Option<Vec<SubAgent>>,
}

/// One prompt in progress, shared by its sub-agents.
struct Conversing<'a> {
    config: &'a HashMap<String, String>,
    events: EventLog,
    journal: Option<&'a Journal>,
    handler: &'a mut dyn ToolHandler,
    budget: Budget,
    /// Sub-agents started, for their ids.
    tasks: u32,
}

impl<'a> Conversing<'a> {
    fn new(ctx: Prompting<'a>, options: &PromptOptions) -> Self {
        let limit = options.max_turns.unwrap_or(DEFAULT_MAX_TURNS).max(1);
        Conversing {
            config: ctx.config,
            events: ctx.events.clone(),
            journal: ctx.journal,
            handler: ctx.handler,
            budget: Budget { limit, used: 0, usage: Usage::default(), cost: Cost::default(), unpriced: false },
            tasks: 0,
        }
    }

    /// The prompt's answer from its loop's end.
    fn answer(
        self,
        provider: &Provider,
        done: Result<(String, Option<String>), Stopped>,
    ) -> wasmtime::Result<Result<PromptAnswer, ModelError>> {
        match done {
            Ok((text, json)) => Ok(Ok(PromptAnswer {
                text,
                json,
                model: provider.label.clone(),
                turns: self.budget.used,
                usage: self.budget.usage,
                cost: (!self.budget.unpriced).then_some(self.budget.cost),
            })),
            Err(Stopped::Model(err)) => Ok(Err(err)),
            Err(Stopped::Halt(err)) => Err(err),
        }
    }

    /// The tools `options` offers at `depth`, or why it names one there is not.
    fn offered(options: &PromptOptions, depth: u32) -> Result<(Vec<String>, bool, bool), ModelError> {
        let can_task = depth < MAX_TASK_DEPTH;
        match &options.tools {
            None => Ok((tools::names().into_iter().map(String::from).collect(), can_task, true)),
            Some(names) => {
                let known = |n: &str| tools::find(n).is_some() || n == TASK || n == ACTIVATE_SKILL;
                if let Some(unknown) = names.iter().find(|n| !known(n)) {
                    return Err(ModelError::InvalidInput(format!(
                        "there is no tool {unknown:?}: the tools are {}, {TASK} and {ACTIVATE_SKILL}",
                        tools::names().join(", ")
                    )));
                }
                let builtin = names.iter().filter(|n| tools::find(n).is_some()).cloned().collect();
                let has = |name: &str| names.iter().any(|n| n == name);
                Ok((builtin, has(TASK) && can_task, has(ACTIVATE_SKILL)))
            }
        }
    }

    /// One conversation's loop, until the model answers.
    async fn converse(
        &mut self,
        provider: &Provider,
        session: &Session,
        conversation: &mut Vec<Message>,
        text: String,
        options: &PromptOptions,
        depth: u32,
    ) -> Result<(String, Option<String>), Stopped> {
        let (builtin, task, skills) = Self::offered(options, depth)?;
        if let Some(schema) = &options.result_schema
            && serde_json::from_str::<Value>(schema).is_err()
        {
            return Err(ModelError::InvalidInput("result-schema is not valid JSON".into()).into());
        }
        // One choke point: every event of this loop, the tools' sandbox
        // operations included, is redacted of the key.
        let events = &self.events.redacting(provider.secrets().clone());
        let session = &Session::new(session.sandbox().clone(), Some(session.cwd()), events.clone())
            .map_err(|err| ModelError::InvalidInput(err.to_string()))?
            .with_max_read(caps::MAX_TOOL_FILE as u64);
        let prepare = prepare(session, events, options, &builtin, task, skills);
        let prepared = journal::through(self.journal, || "system-prompt".into(), prepare).await?;
        let offered = Offered { builtin, task: prepared.agents, skills: prepared.skills };
        let system = prepared.system;
        let mut definitions = tools::definitions(&offered.builtin);
        if let Some(agents) = &offered.task {
            definitions.push(workspace::task_definition(agents));
        }
        if !offered.skills.is_empty() {
            definitions.push(workspace::activate_skill_definition());
        }
        definitions.extend(options.agent_tools.iter().map(AgentTool::definition));

        conversation.push(Message::User(text));
        while self.budget.used < self.budget.limit {
            let size = conversation_bytes(&system, conversation);
            if size > caps::MAX_CONVERSATION {
                return Err(ModelError::ContextOverflow(format!(
                    "the conversation is {}, over flue's cap of {}: start a new session, or narrow the task",
                    format_bytes(size),
                    format_bytes(caps::MAX_CONVERSATION)
                ))
                .into());
            }
            let started = Instant::now();
            let request = TurnRequest {
                system: &system,
                messages: conversation,
                tools: &definitions,
                thinking: options.thinking,
            };
            let live = async {
                let mut text_events = TextEvents { secrets: provider.secrets(), events, pending: Vec::new() };
                let reply = provider.turn(&request, &mut |delta: &str| text_events.push(delta)).await;
                text_events.finish();
                // The key, if the model says it, goes no further: not into the
                // journal, the conversation or a tool's arguments.
                reply.map(|reply| without_key(provider, reply))
            };
            let reply = journal::through(self.journal, || "model-turn".into(), live).await??;
            self.budget.spend(provider, &reply.usage);
            events.record(Event::ModelTurn {
                model: provider.label.clone(),
                turn: self.budget.used,
                duration_ms: millis(started.elapsed()),
                input_tokens: reply.usage.input,
                output_tokens: reply.usage.output,
                tool_calls: reply.calls.len(),
            });
            conversation.push(Message::Assistant {
                text: reply.text.clone(),
                calls: reply.calls.clone(),
                reasoning: reply.reasoning.clone(),
            });
            if reply.calls.is_empty() {
                // The key never reaches the agent, even when the model says it.
                let text = provider.redact(&reply.text);
                // Re-serialised JSON turns escapes (`\u0073k-…`) back into the
                // characters they stand for: redact it again.
                let json = match &options.result_schema {
                    Some(_) => Some(provider.redact(&answer_json(&text)?)),
                    None => None,
                };
                return Ok((text, json));
            }
            let mut results = Vec::new();
            for call in &reply.calls {
                let started = Instant::now();
                let outcome = self.call_tool(provider, session, &offered, options, call, depth).await?;
                let arguments: String = provider.redact(&call.input.to_string()).chars().take(200).collect();
                let shown = provider.redact(&outcome.content).chars().take(crate::events::TOOL_RESULT_SHOWN).collect();
                events.record(Event::ToolCall {
                    tool: call.name.clone(),
                    arguments,
                    result_bytes: outcome.content.len(),
                    result: shown,
                    is_error: outcome.is_error,
                    duration_ms: millis(started.elapsed()),
                });
                results.push(ToolResult { id: call.id.clone(), content: outcome.content, is_error: outcome.is_error });
            }
            conversation.push(Message::Results(results));
        }
        Err(ModelError::MaxTurns(format!(
            "the model did not finish within {} turns (raise max-turns, or narrow the task)",
            self.budget.limit
        ))
        .into())
    }

    /// Run one tool call: the agent's, flue's, `activate_skill` or `task`.
    async fn call_tool(
        &mut self,
        provider: &Provider,
        session: &Session,
        offered: &Offered,
        options: &PromptOptions,
        call: &super::ToolCall,
        depth: u32,
    ) -> Result<tools::Outcome, Stopped> {
        let name = call.name.as_str();
        let key = || journal::key("tool", &[name.as_bytes(), call.input.to_string().as_bytes()]);
        if let Some(tool) = options.agent_tools.iter().find(|t| t.name == name) {
            if let Err(why) = tool.check(&call.input) {
                return Ok(tools::Outcome::error(why));
            }
            return self.call_agent_tool(name, &call.input, key()).await;
        }
        if offered.builtin.iter().any(|n| n == name) {
            return Ok(journal::through(self.journal, key, tools::call(session, name, &call.input)).await?);
        }
        if name == ACTIVATE_SKILL && !offered.skills.is_empty() {
            let activate = workspace::activate_skill(session, &offered.skills, &call.input);
            return Ok(journal::through(self.journal, key, activate).await?);
        }
        if let (TASK, Some(agents)) = (name, &offered.task) {
            return Box::pin(self.task_tool(provider, session, agents, options, &call.input, depth)).await;
        }
        Ok(tools::Outcome::error(format!("the tool {name} is not available here")))
    }

    /// The agent's tool, through its `tools` export: a trap ends the run
    /// (and is never journaled), its `err` goes back to the model.
    async fn call_agent_tool(&mut self, name: &str, input: &Value, key: String) -> Result<tools::Outcome, Stopped> {
        if let Some(journal) = self.journal
            && let Some(replayed) = journal.replay::<tools::Outcome>(&key)?
        {
            return Ok(replayed);
        }
        let returned = self.handler.call(name, &input.to_string()).await.map_err(Stopped::Halt)?;
        let outcome = match returned {
            Ok(text) => tools::Outcome::ok(tools::head(&text, "tool result")),
            Err(text) => tools::Outcome::error(tools::head(&text, "tool error")),
        };
        if let Some(journal) = self.journal {
            journal.record(&key, &outcome);
        }
        Ok(outcome)
    }

    /// The model's `task` tool: a sub-agent's loop, whose answer is the
    /// result.
    async fn task_tool(
        &mut self,
        provider: &Provider,
        session: &Session,
        agents: &[SubAgent],
        parent: &PromptOptions,
        input: &Value,
        depth: u32,
    ) -> Result<tools::Outcome, Stopped> {
        let text = |key: &str| input.get(key).and_then(Value::as_str).filter(|v| !v.trim().is_empty());
        let Some(prompt) = text("prompt") else {
            return Ok(tools::Outcome::error("task: the parameter prompt is required"));
        };
        let name = text("agent").unwrap_or(workspace::GENERAL_AGENT);
        let Some(agent) = agents.iter().find(|a| a.name == name) else {
            let known: Vec<&str> = agents.iter().map(|a| a.name.as_str()).collect();
            let message = format!("Subagent {name:?} is not declared. Available subagents: {}", known.join(", "));
            return Ok(tools::Outcome::error(message));
        };
        let child = match child_session(session, text("cwd")) {
            Ok(child) => child,
            Err(message) => return Ok(tools::Outcome::error(format!("task: {message}"))),
        };
        let own_provider = match &agent.model {
            Some(model) => match Provider::from_config(model, self.config) {
                Ok(own) => Some(own),
                Err(err) => return Ok(tools::Outcome::error(format!("task: agent {name:?}: {err}"))),
            },
            None => None,
        };
        let options = PromptOptions {
            system: (!agent.instructions.is_empty()).then(|| agent.instructions.clone()),
            max_turns: None,
            tools: parent.tools.clone(),
            result_schema: None,
            thinking: agent.thinking.or(parent.thinking),
            agent_tools: parent.agent_tools.clone(),
        };
        let description = text("description").unwrap_or_default();
        let provider = own_provider.as_ref().unwrap_or(provider);
        match self.nested(provider, &child, prompt.to_string(), &options, (name, description), depth + 1).await {
            Ok((text, _)) if text.trim().is_empty() => Ok(tools::Outcome::ok("(task completed with no text)".into())),
            Ok((text, _)) => Ok(tools::Outcome::ok(tools::head(&text, "task answer"))),
            Err(Stopped::Model(err)) => Ok(tools::Outcome::error(format!("the sub-agent failed: {err}"))),
            Err(halt) => Err(halt),
        }
    }

    /// A sub-agent's loop at `depth`, between its `task-started` and
    /// `task-finished` events.
    async fn nested(
        &mut self,
        provider: &Provider,
        session: &Session,
        text: String,
        options: &PromptOptions,
        (agent, description): (&str, &str),
        depth: u32,
    ) -> Result<(String, Option<String>), Stopped> {
        self.tasks += 1;
        let task = format!("task-{}", self.tasks);
        let (started, turns_before) = (Instant::now(), self.budget.used);
        self.events.record(Event::TaskStarted {
            task: task.clone(),
            agent: agent.to_string(),
            description: description.chars().take(200).collect(),
            model: provider.label.clone(),
            depth,
        });
        let mut conversation = Vec::new();
        let done = Box::pin(self.converse(provider, session, &mut conversation, text, options, depth)).await;
        self.events.record(Event::TaskFinished {
            task,
            ok: done.is_ok(),
            turns: self.budget.used - turns_before,
            duration_ms: millis(started.elapsed()),
            depth,
        });
        done
    }
}

/// The system prompt, and the skills and sub-agents it lists: the agent's
/// instructions, the tools, `AGENTS.md` from the cwd, skills and
/// sub-agents, the cwd itself, the date and the cwd's top level.
async fn prepare(
    session: &Session,
    events: &EventLog,
    options: &PromptOptions,
    builtin: &[String],
    task: bool,
    skills_asked: bool,
) -> Prepared {
    let skills = if skills_asked { workspace::skills(session, events).await } else { Vec::new() };
    let agents = if task { Some(workspace::sub_agents(session).await) } else { None };
    let mut names: Vec<&str> = builtin.iter().map(String::as_str).collect();
    names.extend(agents.iter().map(|_| TASK));
    names.extend((!skills.is_empty()).then_some(ACTIVATE_SKILL));
    names.extend(options.agent_tools.iter().map(|t| t.name.as_str()));
    let mut parts = Vec::new();
    if let Some(system) = options.system.as_deref().filter(|s| !s.trim().is_empty()) {
        parts.push(system.trim().to_string());
    }
    parts.push(format!(
        "You work in a sandbox through tools ({}). Paths are relative to the working directory unless \
         absolute. Use the tools to inspect and change files and to run commands; when the task is done, \
         answer with a short summary.",
        names.join(", ")
    ));
    if let Some(instructions) = read_start(session, "AGENTS.md", MAX_AGENTS_MD).await {
        parts.push(format!("Project instructions (AGENTS.md):\n{}", instructions.trim()));
    }
    if !skills.is_empty() {
        parts.push(workspace::skills_section(&skills));
    }
    if let Some(agents) = &agents {
        parts.push(workspace::agents_section(agents));
    }
    let today = crate::events::today_utc();
    parts.push(format!("Working directory: {}\nToday's date: {today}", session.cwd()));
    if let Ok(mut entries) = session.readdir(".").await {
        entries.truncate(100);
        if !entries.is_empty() {
            parts.push(format!("Top level of the working directory:\n{}", entries.join("\n")));
        }
    }
    if let Some(schema) = &options.result_schema {
        parts.push(format!(
            "Your final answer must be only a JSON value that follows this JSON Schema, with no other text:\n{schema}"
        ));
    }
    Prepared { system: parts.join("\n\n"), skills, agents }
}
