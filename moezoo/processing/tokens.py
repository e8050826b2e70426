"""The zoo's special tokens and its chat template, shared by inference and training.

The placeholders mark where a modality's feature tokens go (one placeholder per
image, audio clip or video in the text; the processor expands each into as many
copies as the encoder and connector produce tokens). The role markers delimit chat
turns. The zoo's own BPE tokenizer has them at ids 0-10, in this order; imported
checkpoints keep their own tokenizer and ids.
"""

from __future__ import annotations

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
IMAGE, AUDIO, VIDEO = "<image>", "<audio>", "<video>"
SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
# Order fixes the ids: <pad> is 0, so zero-filled buffers are padding.
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, IMAGE, AUDIO, VIDEO, SYSTEM, USER, ASSISTANT, END)
PLACEHOLDERS = (IMAGE, AUDIO, VIDEO)
MODALITIES = ("image", "audio", "video")  # the media a model may take, in placeholder order
MODALITY_NAMES = ("text", *MODALITIES)  # MultimodalOutput.modality_ids: 0 text, 1 image, 2 audio, 3 video
# The zoo's chat template (moezoo/assets/tokenizer/chat_template.jinja, written by `moezoo data tokenizer`):
# inference and training (Processor.encode_example) both render conversations with it.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
