# The quickstart with validation: hold out a fifth of the identity questions, measure the
# validation loss every 20 steps, keep the weights with the lowest one as the final
# artifact, and stop early once it no longer improves.
_base_ = ['./tiny_llama_lora_self_cognition.py']
data = dict(test_size=0.2)
train = dict(eval_interval=20, save_best='eval_loss', export_best=True,
             early_stopping=dict(patience=3, min_delta=0.001))
evaluation = dict(prompts=['Who are you?', '你是谁?'])
