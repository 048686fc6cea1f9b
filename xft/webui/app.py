"""The `xft webui` page (Gradio): configure → launch → watch → chat → export.

Everything about a run lives in its work dir (xft.webui.runs), and the page
reads it back on a timer, so a closed tab, a second tab or a restarted UI
show the same runs. Chat uses the served-model path of `xft serve`
(same template, same stop handling, streamed token by token).
"""

import dataclasses
import json
import time
from pathlib import Path

from xft.config import list_configs
from xft.data.formats import FORMATS
from xft.data.templates import TEMPLATES
from xft.engine.monitor import loss_figure
from xft.errors import XftError
from xft.webui.form import Form, form_of, resolve
from xft.webui.runs import CONFIG_FILE, RunStore, train_command

DEFAULT_CONFIG = "tiny_llama_lora_self_cognition"  # the README quickstart
CHAT_MAX_TOKENS = 128
LOG_LINES = 10  # the end of the run's log shown under its curve


def build_ui(store: RunStore):
    import gradio as gr

    chats = {}  # run name -> ServedModel of its artifact, loaded on first use

    with gr.Blocks(title="xft") as ui:
        gr.Markdown("# xft: fine-tune, watch, chat, export")
        with gr.Tabs() as tabs:
            with gr.Tab("Configure & launch", id="train"):
                with gr.Row():
                    config = gr.Dropdown(list_configs(), value=DEFAULT_CONFIG,
                                         label="Shipped config", elem_id="config")
                    config_file = gr.Textbox(label="... or a config file (path)",
                                             elem_id="config-file")
                with gr.Row():
                    model_path = gr.Textbox(label="Model path", elem_id="model-path")
                    template = gr.Dropdown(sorted(TEMPLATES), label="Chat template",
                                           elem_id="template")
                    method = gr.Radio(["lora", "full", "freeze"], label="Method",
                                      elem_id="method")
                with gr.Row():
                    dataset_path = gr.Textbox(label="Dataset file", elem_id="dataset-path")
                    dataset_format = gr.Dropdown(sorted(FORMATS), label="Dataset format",
                                                 allow_custom_value=True,
                                                 elem_id="dataset-format")
                with gr.Row():
                    lr = gr.Number(label="Learning rate", elem_id="lr")
                    epochs = gr.Number(label="Epochs", precision=0, elem_id="epochs")
                    max_length = gr.Number(label="Max length (tokens)", precision=0,
                                           elem_id="max-length")
                    save_interval = gr.Number(label="Checkpoint every (steps)", precision=0,
                                              elem_id="save-interval")
                    log_interval = gr.Number(label="Log every (steps)", precision=0,
                                             elem_id="log-interval")
                run_name = gr.Textbox(label=f"Run name (its work dir: {store.root}/NAME)",
                                      elem_id="run-name")
                with gr.Row():
                    preview_button = gr.Button("Check & preview", elem_id="preview")
                    launch_button = gr.Button("Launch training", variant="primary",
                                              elem_id="launch")
                check = gr.Markdown(elem_id="check")
                command = gr.Code(label="Equivalent command", language="shell",
                                  elem_id="command")
                resolved = gr.Code(label="Resolved config", language="python",
                                   elem_id="resolved")
            with gr.Tab("Runs", id="runs"):
                runs_table = gr.Dataframe(headers=["run", "state", "step", "loss"],
                                          interactive=False, elem_id="runs-table")
                run = gr.Dropdown(store.names(), label="Run", elem_id="run")
                status = gr.Markdown(elem_id="run-status")
                plot = gr.Plot(label="Loss", elem_id="loss-plot")
                with gr.Row():
                    stop_button = gr.Button("Stop", elem_id="stop")
                    resume_button = gr.Button("Resume", elem_id="resume")
                log = gr.Textbox(label="Log (end)", lines=LOG_LINES, max_lines=LOG_LINES, elem_id="log")
            with gr.Tab("Chat", id="chat"):
                gr.Markdown("Chat with the selected run's artifact (its hf/ folder), "
                                        "greedy, with the template it was trained on.")
                chatbot = gr.Chatbot(elem_id="chatbot", height=360)
                with gr.Row():
                    message = gr.Textbox(label="Message", elem_id="chat-input", scale=4)
                    send = gr.Button("Send", variant="primary", elem_id="send", scale=1)
                    clear = gr.Button("Clear", elem_id="clear", scale=1)
            with gr.Tab("Export", id="export"):
                gr.Markdown("Fold the selected run's LoRA adapter into its base model: a full "
                            "model folder that loads with plain transformers.")
                export_dir = gr.Textbox(label="Output folder (default: RUN/merged)",
                                        elem_id="export-dir")
                export_button = gr.Button("Merge & export", elem_id="export")
                export_result = gr.Markdown(elem_id="export-result")

        form_fields = [model_path, template, dataset_path, dataset_format, method, lr, epochs,
                       max_length, save_interval, log_interval]

        def chosen(config_value, file_value):
            return (file_value or "").strip() or config_value

        def load_form(config_value, file_value):
            name = chosen(config_value, file_value)
            try:
                values = dataclasses.astuple(form_of(name))
            except XftError as e:
                return [gr.update()] * len(form_fields) + [gr.update(), f"**Error:** {e}"]
            default_name = f"{Path(name).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
            return list(values) + [default_name, ""]

        def read_form(config_value, file_value, *values):
            return chosen(config_value, file_value), Form(*values)

        def preview(config_value, file_value, name, *values):
            try:
                text, resolved_text = resolve(*read_form(config_value, file_value, *values))
            except XftError as e:
                return f"**Error:** {e}", "", ""
            run_dir = store.root / (name or "RUN")
            shown = " ".join(train_command(run_dir / CONFIG_FILE, run_dir)[2:])
            return ("OK: the config is valid. Launching writes this run config to "
                    f"`{run_dir / CONFIG_FILE}`:\n\n```python\n{text}```",
                    shown, resolved_text)

        def launch(config_value, file_value, name, *values):
            try:
                text, resolved_text = resolve(*read_form(config_value, file_value, *values))
                run_dir = store.launch((name or "").strip(), text)
            except XftError as e:
                return f"**Error:** {e}", gr.update(), gr.update(), gr.update()
            shown = " ".join(train_command(run_dir / CONFIG_FILE, run_dir)[2:])
            return (f"Launched `{run_dir.name}`: follow it in the Runs tab.",
                    gr.update(choices=store.names(), value=run_dir.name), gr.Tabs(selected="runs"),
                    shown)

        def refresh(selected):
            rows = [store.state(name).row() for name in store.names()]
            if not selected:
                return rows, gr.update(choices=store.names()), "No run selected.", None, ""
            state = store.state(selected)
            line = f"**{state.name}**: {state.state}, step {state.row()[2]}"
            if state.loss == state.loss:
                line += f", loss {state.loss:.4f}"
            return (rows, gr.update(choices=store.names()), line,
                    loss_figure(store.metrics(selected), size=(7, 3.2)),
                    "\n".join(store.log_tail(selected).splitlines()[-LOG_LINES:]))

        def stop(selected):
            _act(store.stop, selected)
            return refresh(selected)

        def resume(selected):
            _act(store.resume, selected)
            return refresh(selected)

        def _act(action, selected):
            if selected:
                try:
                    action(selected)
                except XftError as e:
                    gr.Warning(str(e))

        async def respond(text, history, selected):
            history = list(history or [])
            if not text.strip():
                yield "", history
                return
            try:
                served = _served(chats, store, selected)
            except XftError as e:
                yield text, history + [{"role": "assistant", "content": f"Error: {e}"}]
                return
            messages = [{"role": m["role"], "content": _text(m["content"])} for m in history]
            messages.append({"role": "user", "content": text})
            history = messages + [{"role": "assistant", "content": ""}]
            yield "", history
            from xft.serve.protocol import APIError
            from xft.serve.generation import Finished

            try:
                request = served.chat_request(messages, CHAT_MAX_TOKENS)
            except APIError as e:
                history[-1]["content"] = f"Error: {e.message}"
                yield "", history
                return
            async for item in served.generator.stream(request):
                if not isinstance(item, Finished):
                    history[-1]["content"] += item
                    yield "", history

        def export(selected, out):
            if not selected:
                return "Select a run in the Runs tab first."
            try:
                return _export(store, selected, out)
            except XftError as e:
                return f"**Error:** {e}"

        outputs_form = form_fields + [run_name, check]
        ui.load(load_form, [config, config_file], outputs_form)
        config.change(load_form, [config, config_file], outputs_form)
        config_file.submit(load_form, [config, config_file], outputs_form)
        preview_button.click(preview, [config, config_file, run_name, *form_fields],
                             [check, command, resolved])
        launch_button.click(launch, [config, config_file, run_name, *form_fields],
                            [check, run, tabs, command])
        watched = [runs_table, run, status, plot, log]
        gr.Timer(2.0).tick(refresh, [run], watched)
        run.change(refresh, [run], watched)
        stop_button.click(stop, [run], watched)
        resume_button.click(resume, [run], watched)
        message.submit(respond, [message, chatbot, run], [message, chatbot])
        send.click(respond, [message, chatbot, run], [message, chatbot])
        clear.click(lambda: [], None, chatbot)
        export_button.click(export, [run, export_dir], export_result)
    return ui


def _text(content):
    """A chat message's text (Gradio may hand content back as a list of parts)."""
    if isinstance(content, list):
        return "".join(part.get("text", "") if isinstance(part, dict) else str(part)
                       for part in content)
    return content if isinstance(content, str) else str(content)


def _served(chats, store, selected):
    if not selected:
        raise XftError("select a run in the Runs tab first")
    artifact = store.artifact(selected)
    if artifact is None:
        raise XftError(f"run '{selected}' has no artifact yet (hf/ is written when training "
                       "ends)")
    key = (selected, artifact.stat().st_mtime)
    if key not in chats:
        from xft.serve.app import ServedModel
        from xft.tools.chat import load_chat_model

        chats[key] = ServedModel(selected, *load_chat_model(str(artifact)))
    return chats[key]


def _export(store, selected, out):
    artifact = store.artifact(selected)
    if artifact is None:
        raise XftError(f"run '{selected}' has no artifact yet")
    adapter_config = artifact / "adapter_config.json"
    if not adapter_config.is_file():
        return f"`{artifact}` is already a full model folder; nothing to merge."
    from xft.tools.merge import merge_adapter

    base = json.loads(adapter_config.read_text())["base_model_name_or_path"]
    out = Path(out.strip()) if out and out.strip() else store.path(selected) / "merged"
    lines = []
    merge_adapter(base, str(artifact), str(out), log=lines.append)
    return "\n\n".join(lines + [f"Merged model written to `{out}`."])
