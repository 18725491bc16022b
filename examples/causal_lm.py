"""A tiny GPT-2 learns a toy language with the Trainer, then writes a sentence of it.

The text is made here: a few hundred sentences from a small grammar ("the small cat sees a
red ball .", "a dog runs and the bird sleeps ."), of varying length. A word-level tokenizer is
trained on that text with the ``tokenizers`` library and wrapped in ``PreTrainedTokenizerFast``
(with a padding token of its own: GPT-2 has none). ``DataCollatorForLanguageModeling(mlm=False)``
pads each batch to its longest row and sets the padded positions' labels to -100, so batches
hold uneven numbers of real tokens; ``gradient_accumulation_steps=2`` then sums two such
micro-batches into one update, which trainkit weights by their real tokens (exact accumulation,
where ``transformers.Trainer`` 5.24 counts the tokens of ``GPT2LMHeadModel`` without the shift).
Finally ``model.generate`` continues a prompt greedily.

Everything is generated and seeded; nothing downloads. Run: ``python examples/causal_lm.py``
(writes ``./output_causal_lm``).
"""

import random

import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import DataCollatorForLanguageModeling, GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

from trainkit import Trainer, TrainingArguments

torch.set_num_threads(1)  # a tiny model: one thread is fastest and leaves the other core free

DETERMINERS, ADJECTIVES = ["the", "a"], ["small", "big", "red", "old", "happy"]
NOUNS, OBJECTS = ["cat", "dog", "bird", "child"], ["ball", "tree", "house", "box"]
TRANSITIVE, INTRANSITIVE = ["sees", "likes", "finds", "wants"], ["runs", "sleeps", "sings", "waits"]


def sentence(rng):
    """One sentence of the grammar: clause ("and" clause)? "." ; a clause is NP (V_t NP | V_i)."""

    def noun_phrase(nouns):
        words = [rng.choice(DETERMINERS)] + ([rng.choice(ADJECTIVES)] if rng.random() < 0.5 else [])
        return words + [rng.choice(nouns)]

    def clause():
        if rng.random() < 0.5:
            return noun_phrase(NOUNS) + [rng.choice(TRANSITIVE)] + noun_phrase(OBJECTS)
        return noun_phrase(NOUNS) + [rng.choice(INTRANSITIVE)]

    words = clause() + (["and"] + clause() if rng.random() < 0.3 else [])
    return " ".join(words + ["."])


def build_tokenizer(texts):
    """A word-level tokenizer trained on ``texts``, as a transformers tokenizer: [BOS] text [EOS]."""
    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]", "[BOS]", "[EOS]"]))
    # Every encoded sentence starts with [BOS] and ends with [EOS], so the model learns where
    # sentences end and generation can stop there.
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[BOS] $A [EOS]", special_tokens=[("[BOS]", tokenizer.token_to_id("[BOS]")), ("[EOS]", tokenizer.token_to_id("[EOS]"))]
    )
    # A pad token distinct from [EOS]: the collator masks padding out of the labels, and would
    # mask every [EOS] too if they were the same token.
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]")


rng = random.Random(0)
texts = [sentence(rng) for _ in range(600)]
tokenizer = build_tokenizer(texts)
dataset = Dataset.from_dict({"text": texts}).map(lambda batch: tokenizer(batch["text"]), batched=True, remove_columns=["text"])
splits = dataset.train_test_split(test_size=0.1, seed=0)

torch.manual_seed(0)
config = GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=48, n_layer=2, n_head=2,
                    bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
model = GPT2LMHeadModel(config)

args = TrainingArguments(
    output_dir="./output_causal_lm",
    num_train_epochs=4,
    per_device_train_batch_size=16,
    gradient_accumulation_steps=2,  # 2 micro-batches of 16 rows per update, weighted by their real tokens
    per_device_eval_batch_size=64,
    learning_rate=5e-3,
    warmup_steps=0.1,  # below 1: a ratio of the training steps
    weight_decay=0.01,
    logging_steps=10,
    eval_strategy="no",
    save_strategy="no",
    report_to="none",
    disable_tqdm=True,
    seed=0,
)
trainer = Trainer(
    model=model,
    args=args,
    train_dataset=splits["train"],
    eval_dataset=splits["test"],
    processing_class=tokenizer,
    data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),  # pads; labels = input_ids, -100 on padding
)
loss_before = trainer.evaluate()["eval_loss"]
trainer.train()
loss_after = trainer.evaluate()["eval_loss"]
print(f"\neval loss (per token): {loss_before:.3f} before training, {loss_after:.3f} after "
      f"(a uniform guess over {len(tokenizer)} tokens: {torch.log(torch.tensor(float(len(tokenizer)))):.3f})")

# Continue a prompt greedily. The prompt is encoded without the template's [EOS] (a sentence in
# progress), and generation stops at [EOS].
model.eval()
prompt = torch.tensor([[tokenizer.bos_token_id] + tokenizer.encode("the happy", add_special_tokens=False)])
with torch.no_grad():
    generated = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=16, do_sample=False,
                               eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
sample = tokenizer.decode(generated[0], skip_special_tokens=True)
print(f"generated: {sample!r}")

# Model and tokenizer together: AutoModelForCausalLM / AutoTokenizer.from_pretrained open the folder.
trainer.save_model()
