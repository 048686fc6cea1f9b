# A reward model: Qwen2 with a one-score head (Qwen2ForSequenceClassification), LoRA on the
# decoder, the new head trained fully, Bradley-Terry loss on preference pairs. The export is
# a whole model that stock AutoModelForSequenceClassification loads; measure it with
#     xft eval work_dirs/<run>/hf --reward pairs.json --format trl_pairs
_base_ = [
    '../_base_/models/qwen2.py',
    '../_base_/datasets/ultrafeedback.py',
    '../_base_/schedules/dpo_lora.py',
]
model = dict(path='Qwen/Qwen2-1.5B-Instruct')
objective = dict(type='reward')
optim = dict(lr=1e-4)
