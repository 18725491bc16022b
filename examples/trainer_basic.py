"""transformers' documented Trainer usage, "Basic Usage", with one import changed.

Differences from the documentation page, all forced by working offline: the model, tokenizer and
dataset come from ``offline.py`` (a tiny BERT, a local WordPiece tokenizer and generated
reviews) instead of ``from_pretrained("bert-base-uncased")`` and ``load_dataset("imdb")``.
The Trainer code is the documentation's, line for line. Run: ``python examples/trainer_basic.py``.
"""

from transformers import DataCollatorWithPadding

from offline import load_model, load_reviews, load_tokenizer
from trainkit import Trainer, TrainingArguments  # the one changed line: was `from transformers import ...`

# Load model and tokenizer
model = load_model(num_labels=2)  # AutoModelForSequenceClassification.from_pretrained("bert-base-uncased", num_labels=2)
tokenizer = load_tokenizer()  # AutoTokenizer.from_pretrained("bert-base-uncased")

# Prepare dataset
dataset = load_reviews(1000)  # load_dataset("imdb", split="train[:1000]")


def tokenize_function(examples):
    return tokenizer(examples["text"], truncation=True)


tokenized_dataset = dataset.map(tokenize_function, batched=True)
train_test_split = tokenized_dataset.train_test_split(test_size=0.2)

# Create training arguments
training_args = TrainingArguments(
    output_dir="./results",
    num_train_epochs=3,
    per_device_train_batch_size=16,
    per_device_eval_batch_size=64,
    eval_strategy="epoch",
    save_strategy="epoch",
    logging_dir="./logs",
)

# Initialize Trainer
trainer = Trainer(
    model=model,
    args=training_args,
    train_dataset=train_test_split["train"],
    eval_dataset=train_test_split["test"],
    data_collator=DataCollatorWithPadding(tokenizer=tokenizer),
)

# Ready to train
trainer.train()
