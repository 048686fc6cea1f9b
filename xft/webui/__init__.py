"""`xft webui`: configure, launch, watch, chat with and export training runs in a browser
(docs/webui.md).

    app.py   the Gradio page
    form.py  the config fields it edits, checked, written as a run config
    runs.py  runs as detached `xft train` processes, their state read from the work dir
"""

import os


def run_webui(args):
    # No usage reporting to Gradio's servers (and none reachable offline).
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from xft.webui.app import build_ui
    from xft.webui.runs import RunStore

    ui = build_ui(RunStore(args.runs_dir))
    print(f"xft: web UI on http://{args.host}:{args.port} (runs in {args.runs_dir})", flush=True)
    ui.queue().launch(server_name=args.host, server_port=args.port, quiet=True,
                      footer_links=[])
