"""``Trainer``: ``transformers.Trainer``'s interface, composed from trainkit's functional core.

The class stores its arguments and wires the pure pieces together; it holds no step logic of
its own. A training update is :func:`trainkit.train_step`; evaluation folds
:func:`trainkit.eval_step` (:func:`trainkit.evaluation.evaluate`); the optimizer and schedule
come from :func:`trainkit.make_optimizer` and :func:`trainkit.make_schedule`; data order and
batching from :mod:`trainkit.data`; when to log, evaluate and save from :mod:`trainkit.cadence`
(through ``transformers``' own callback handler, so ``TrainerCallback``s work unchanged).

What is deliberately different from ``transformers.Trainer``: gradient accumulation weights
each micro-batch by its label items (exact for every model), dropout is seeded per step, a
NaN/inf loss raises before it reaches the parameters, and options trainkit does not support
raise instead of being ignored.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import warnings
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn
from transformers.trainer_callback import ExportableState, TrainerControl, TrainerState
from transformers.trainer_utils import EvalPrediction, PredictionOutput, TrainOutput, set_seed

from trainkit import columns
from trainkit import data as tkdata
from trainkit.args import as_training_arguments
from trainkit.callbacks import make_callback_handler, step_hooks
from trainkit.checkpoint import (
    delete_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    load_model_weights,
    read_checkpoint_metadata,
    remove_staging,
    rotate_checkpoints,
    save_checkpoint,
    save_model,
    write_checkpoint,
)
from trainkit import distributed
from trainkit.checks import _shown, check_output_dir, check_train_dataset, check_trainer_inputs, dry_run, first_batch_checked
from trainkit.errors import ConfigError, ConfigTypeError, MetricNotFoundError, TrainkitWarning
from trainkit.evaluation import evaluate as evaluate_batches
from trainkit.evaluation import default_ignore_keys, speed_metrics
from trainkit.logging import LossTracker, integration_callbacks, transformers_bars
from trainkit.losses import label_smoothed_loss
from trainkit.optim import make_optimizer
from trainkit.resume import SigtermFlag, check_fingerprint, data_fingerprint, resolve_checkpoint, stop_on_sigterm
from trainkit.schedules import make_scheduler
from trainkit.sharding import is_sharded, shard_model
from trainkit.state import TrainState, init_state
from trainkit.step import StepHooks, train_step
from trainkit.step import _all_labels
from trainkit.step import _logits_of as logits_of

__all__ = ["Trainer"]


class Trainer:
    """A drop-in ``transformers.Trainer``: same constructor, same methods, same callbacks.

    Example:
        >>> import torch, tempfile
        >>> from trainkit import Trainer, TrainingArguments
        >>> class Regressor(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.linear = torch.nn.Linear(2, 1)
        ...     def forward(self, x, labels=None):
        ...         out = self.linear(x).squeeze(-1)
        ...         return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}
        >>> rows = [{"x": torch.randn(2), "labels": torch.tensor(1.0)} for _ in range(16)]
        >>> args = TrainingArguments(output_dir=tempfile.mkdtemp(), num_train_epochs=2, disable_tqdm=True,
        ...                          save_strategy="no", logging_strategy="no", report_to="none")
        >>> Trainer(model=Regressor(), args=args, train_dataset=rows).train().global_step  # doctest: +ELLIPSIS
        {'train_runtime': ...}
        4
    """

    def __init__(
        self,
        model: nn.Module | None = None,
        args: Any = None,
        data_collator: Callable[[list[Any]], dict[str, Any]] | None = None,
        train_dataset: Any = None,
        eval_dataset: Any = None,
        processing_class: Any = None,
        model_init: Callable[..., nn.Module] | None = None,
        compute_loss_func: Callable | None = None,
        compute_metrics: Callable[[EvalPrediction], dict] | None = None,
        callbacks: list[Any] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        optimizer_cls_and_kwargs: tuple[type[torch.optim.Optimizer], dict[str, Any]] | None = None,
        preprocess_logits_for_metrics: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    ):
        self.args = as_training_arguments(args)
        # Everything is checked before anything runs or is written (docs/errors.md lists the errors).
        check_trainer_inputs(
            model=model, model_init=model_init, data_collator=data_collator, train_dataset=train_dataset,
            eval_dataset=eval_dataset, processing_class=processing_class, compute_loss_func=compute_loss_func, compute_metrics=compute_metrics, callbacks=callbacks,
            optimizers=optimizers, optimizer_cls_and_kwargs=optimizer_cls_and_kwargs,
            preprocess_logits_for_metrics=preprocess_logits_for_metrics,
        )
        check_output_dir(self.args.output_dir)
        if getattr(self.args, "fsdp", None) and optimizers[0] is not None:
            raise ConfigError(
                "Trainer: `optimizers` holds an optimizer over the unsharded parameters, but fsdp shards them (new "
                "parameter objects) before training. Use `optimizer_cls_and_kwargs=(cls, kwargs)` or args.optim with fsdp."
            )
        if self.args.eval_strategy != "no" and eval_dataset is None:
            raise ConfigError(
                f"TrainingArguments(eval_strategy={self.args.eval_strategy!r}) needs an evaluation set, but no eval_dataset "
                f"was given. Fix: pass Trainer(eval_dataset=...), or set eval_strategy='no'."
            )
        # Under torchrun, join the process group first: the device (cuda:LOCAL_RANK) depends on it.
        distributed.setup_distributed(backend=self.args.ddp_backend, timeout=self.args.ddp_timeout, use_cpu=self.args.use_cpu)
        set_seed(self.args.seed)  # as transformers does, before model_init builds a model
        self.model_init = model_init
        self.model = (self.call_model_init() if model is None else model).to(self.args.device)
        self.model_wrapped = self.model  # transformers' name for the DDP (or compiled) model train() steps
        self.processing_class = processing_class
        self.data_collator = data_collator if data_collator is not None else columns.default_collator(processing_class)
        self.train_dataset, self.eval_dataset = train_dataset, eval_dataset
        self.compute_loss_func = compute_loss_func
        self.compute_metrics = compute_metrics
        self.preprocess_logits_for_metrics = preprocess_logits_for_metrics
        self.optimizer, self.lr_scheduler = optimizers
        self.optimizer_cls_and_kwargs = optimizer_cls_and_kwargs
        self.label_names = list(self.args.label_names) if self.args.label_names else columns.find_label_names(self.model)
        self.callback_handler = make_callback_handler(
            callbacks, model=self.model, processing_class=processing_class, optimizer=self.optimizer,
            lr_scheduler=self.lr_scheduler, disable_tqdm=bool(self.args.disable_tqdm),
            integrations=integration_callbacks(self.args.report_to, logging_dir=self.args.logging_dir, items_seen=self._items_seen),
        )
        self.state = TrainerState(**self._process_flags())
        self.control = TrainerControl()
        self._train_state: TrainState | None = None
        self._flop_params: tuple[str, int] | None = None  # (main input name, non-embedding parameters)
        self._current_flos = 0.0  # this process's flos since they were last added to state.total_flos
        self._losses = LossTracker(nan_filter=self.args.logging_nan_inf_filter)
        self._sigterm = SigtermFlag()
        self._first_step_checked = False  # the first step of train() doubles as the dry run (see check())
        self.control = self.callback_handler.on_init_end(self.args, self.state, self.control)
        if getattr(self.model, "config", None) is not None:  # as transformers: the KV cache off while training
            self.model.config.use_cache = self.args.use_cache

    # ---- models, optimizers, schedules --------------------------------------------------------

    def call_model_init(self, trial: Any = None) -> nn.Module:
        """Build a model with ``model_init`` (taking no argument, or the trial)."""
        count = len(inspect.signature(self.model_init).parameters)
        if count > 1:
            raise ConfigTypeError(f"Trainer(model_init=...): model_init must take 0 or 1 argument (the trial); it takes {count}. "
                                  "Fix: def model_init(trial=None): return AutoModelFor...from_pretrained(...).")
        model = self.model_init() if count == 0 else self.model_init(trial)
        if not isinstance(model, nn.Module):
            raise ConfigTypeError(f"Trainer(model_init=...): model_init returned {_shown(model)}, expected an nn.Module. "
                                  "Fix: make it return the model it builds (a missing `return`?).")
        return model

    def _items_seen(self) -> int:
        return self._train_state.progress.items_seen if self._train_state is not None else 0

    def _process_flags(self) -> dict[str, bool]:
        return {"is_local_process_zero": self.args.local_process_index == 0, "is_world_process_zero": self.args.process_index == 0}

    def is_local_process_zero(self) -> bool:
        """Whether this process is rank 0 of its node."""
        return self.args.local_process_index == 0

    def is_world_process_zero(self) -> bool:
        """Whether this process is global rank 0 (the one that saves)."""
        return self.args.process_index == 0

    def _wrap_model(self) -> nn.Module:
        """The model train_step runs: DDP-wrapped with several processes (init_state then compiles it: ``torch_compile``)."""
        args, model = self.args, self.model
        if args.world_size == 1 or is_sharded(self.model):
            return model
        return distributed.wrap_model(model, find_unused_parameters=args.ddp_find_unused_parameters, bucket_cap_mb=args.ddp_bucket_cap_mb,
                                      broadcast_buffers=args.ddp_broadcast_buffers, static_graph=bool(args.ddp_static_graph))

    def create_optimizer(self) -> torch.optim.Optimizer:
        """The optimizer: the one given in ``optimizers``, else from ``optimizer_cls_and_kwargs`` or ``args.optim``."""
        if self.optimizer is None:
            args = self.args
            if self.optimizer_cls_and_kwargs is not None:
                cls, kwargs = self.optimizer_cls_and_kwargs
                kwargs = dict(kwargs)
                self.optimizer = make_optimizer(self.model, cls, lr=kwargs.pop("lr", args.learning_rate), weight_decay=kwargs.pop("weight_decay", args.weight_decay), **kwargs)
            else:
                extra = dict(args.optim_kwargs())
                if args.optim in ("adamw_torch", "adamw_torch_fused"):
                    extra = {"betas": (args.adam_beta1, args.adam_beta2), "eps": args.adam_epsilon, **extra}
                self.optimizer = make_optimizer(self.model, args.optim, lr=args.learning_rate, weight_decay=args.weight_decay, **extra)
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        """The LR scheduler (a ``LambdaLR`` over trainkit's pure schedule), unless one was given."""
        if self.lr_scheduler is None:
            args = self.args
            self.lr_scheduler = make_scheduler(
                optimizer or self.optimizer, args.lr_scheduler_type,
                num_warmup_steps=args.warmup_steps_for(num_training_steps), num_training_steps=num_training_steps,
                **(args.lr_scheduler_kwargs or {}),
            )
        return self.lr_scheduler

    def create_optimizer_and_scheduler(self, num_training_steps: int) -> None:
        """Create the optimizer, then the scheduler for ``num_training_steps`` (transformers' method)."""
        self.create_optimizer()
        self.create_scheduler(num_training_steps, self.optimizer)

    # ---- data ---------------------------------------------------------------------------------

    def _prepare(self, dataset: Any, description: str) -> tuple[Any, Callable]:
        return columns.prepare_columns(
            dataset, self.data_collator, self.model, label_names=self.label_names,
            remove_unused_columns=self.args.remove_unused_columns, description=description,
        )

    def get_train_dataloader(self, epoch: int = 0, skip_batches: int = 0) -> Any:
        """This process's batches of epoch ``epoch`` (from batch ``skip_batches``), in the seeded order."""
        if self.train_dataset is None:
            raise ConfigError("Trainer.train() needs a train_dataset; pass Trainer(train_dataset=...).")
        dataset, collator = self._prepare(self.train_dataset, "training")
        args = self.args
        options = dict(batch_size=args.train_batch_size, collator=collator, epoch=epoch, skip_batches=skip_batches,
                       drop_last=args.dataloader_drop_last, rank=args.process_index, world_size=args.world_size, **self._loader_options())
        if not tkdata.has_length(dataset):
            return tkdata.iterable_batches(dataset, **options)
        return tkdata.train_batches(dataset, seed=args.data_seed if args.data_seed is not None else args.seed, **options)

    def get_eval_dataloader(self, eval_dataset: Any = None) -> Any:
        """The evaluation batches (``eval_dataset``, a name of a dict of them, or the Trainer's), in dataset order."""
        dataset = self.eval_dataset if eval_dataset is None else eval_dataset
        if isinstance(dataset, str):
            dataset = self.eval_dataset[dataset]
        if dataset is None:
            raise ConfigError("Trainer.evaluate() needs an eval_dataset; pass Trainer(eval_dataset=...) or evaluate(eval_dataset=...).")
        dataset, collator = self._prepare(dataset, "evaluation")
        args = self.args
        return tkdata.eval_batches(dataset, batch_size=args.eval_batch_size, collator=collator, rank=args.process_index,
                                   world_size=args.world_size, **self._loader_options())

    def _loader_options(self) -> dict[str, Any]:
        args = self.args
        return {"num_workers": args.dataloader_num_workers, "persistent_workers": args.dataloader_persistent_workers,
                "prefetch_factor": args.dataloader_prefetch_factor,
                # Pinned memory only helps copies to an accelerator; torch warns when there is none.
                "pin_memory": args.dataloader_pin_memory and args.device.type == "cuda"}

    def get_test_dataloader(self, test_dataset: Any) -> Any:
        """The batches ``predict`` runs on: as :meth:`get_eval_dataloader`."""
        return self.get_eval_dataloader(test_dataset)

    # ---- the loop -----------------------------------------------------------------------------

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None) -> Any:
        """The loss of one batch (transformers' method; override it to customise the loss)."""
        outputs = model(**inputs)
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs[0]
        return (loss, outputs) if return_outputs else loss

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """transformers' estimate for one forward and backward: 6 × input tokens × non-embedding parameters."""
        if self._flop_params is None:  # the count walks every parameter: once per run, not per batch
            model = self.model
            self._flop_params = (getattr(model, "main_input_name", "input_ids"),
                                 model.num_parameters(exclude_embeddings=True) if hasattr(model, "num_parameters") else 0)
        main, params = self._flop_params
        if params and isinstance(inputs, Mapping) and main in inputs:
            return 6 * inputs[main].numel() * params
        return 0

    def _loss_options(self) -> dict[str, Any]:
        """How train_step/eval_step compute the loss: a subclass's compute_loss, compute_loss_func, label smoothing."""
        if type(self).compute_loss is not Trainer.compute_loss:
            return {"loss_fn": lambda model, batch: self.compute_loss(model, batch)}
        if self.compute_loss_func is not None:
            return {"compute_loss_func": self.compute_loss_func}
        if self.args.label_smoothing_factor:
            from trainkit.step import _model_facts

            return {"compute_loss_func": label_smoothed_loss(self.args.label_smoothing_factor, shift=_model_facts(self.model)[1])}
        return {}

    def _eval_loss_options(self, ignore_keys: list[str] | None) -> dict[str, Any]:
        """As _loss_options, but an overridden compute_loss is called as transformers' prediction_step calls
        it: with return_outputs=True, its outputs (less "loss" and the ignored keys) being the predictions."""
        if type(self).compute_loss is Trainer.compute_loss:
            return self._loss_options()
        ignore = default_ignore_keys(self.model) if ignore_keys is None else ignore_keys

        def loss_fn(model: nn.Module, batch: Any) -> tuple[torch.Tensor, Any]:
            loss, outputs = self.compute_loss(model, batch, return_outputs=True)
            return loss.mean(), logits_of(outputs, ignore, has_loss=True)

        return {"loss_fn": loss_fn}

    def _fire(self, event: str, **kwargs: Any) -> TrainerControl:
        self.control = getattr(self.callback_handler, event)(self.args, self.state, self.control, **kwargs)
        return self.control

    def train(self, resume_from_checkpoint: str | bool | None = None, trial: Any = None, ignore_keys_for_eval: list[str] | None = None, **kwargs: Any) -> TrainOutput:
        """Train for ``args.max_steps`` updates (or ``num_train_epochs``), with transformers' events.

        Args:
            resume_from_checkpoint: a ``checkpoint-N`` folder, or True for the newest in
                ``output_dir``: weights, optimizer, schedule, data position and ``TrainerState``
                are restored and training continues bit for bit.
            trial: passed to ``model_init`` (hyperparameter search).
            ignore_keys_for_eval: output keys left out of the evaluations' predictions.

        Returns:
            ``TrainOutput(global_step, training_loss, metrics)`` with transformers' train metrics
            (``train_runtime``, ``train_samples_per_second``, ``train_loss``, ...), covering this
            call's steps.

        Raises:
            ConfigError: a dataset or first batch the model cannot use (see ``docs/errors.md``);
                the first step is a dry run, so nothing is updated or written before it.
            CheckpointError: a ``resume_from_checkpoint`` that is missing, corrupted or from
                another model.
            NonFiniteError: a NaN/inf loss or gradient norm, naming the step (parameters unchanged).

        The class docstring has an example.
        """
        if kwargs:
            raise TypeError(f"train() got unexpected keyword arguments: {', '.join(kwargs)}.")
        start = time.time()
        state, plan, num_samples = self._setup_training(trial)
        self._losses = losses = LossTracker(nan_filter=self.args.logging_nan_inf_filter)
        if self.args.should_save:
            remove_staging(self.args.output_dir)  # what a killed save left behind
        if resume_from_checkpoint not in (None, False):
            state = self._resume(resume_from_checkpoint, state)
        first_step = state.step  # train_loss and the speed figures cover this call's steps, as in transformers
        first_epoch, skip = state.progress.epoch, state.progress.position
        # transformers builds the train dataloader before on_train_begin; callbacks receive it there.
        batches = self.callback_handler.train_dataloader = self.get_train_dataloader(epoch=first_epoch, skip_batches=skip)
        self._fire("on_train_begin")
        if self.eval_dataset is not None and self.args.eval_strategy != "no" and not self._first_step_checked:
            self._check_eval_batches()  # an evaluation set that cannot be evaluated fails now, not at the first evaluation
        if self.args.eval_on_start and state.step == 0:
            self._evaluate(ignore_keys_for_eval, skip_scheduler=True)
        with stop_on_sigterm() as self._sigterm:
            for epoch in range(first_epoch, plan.num_train_epochs):
                if state.step >= plan.max_steps:
                    break
                batches = batches if epoch == first_epoch else self.get_train_dataloader(epoch=epoch)
                state = self._run_epoch(state, epoch, batches, plan, losses, ignore_keys_for_eval, seen=skip if epoch == first_epoch else 0)
                if self.control.should_training_stop:
                    break
        steps = self.state.global_step
        self.store_flos()
        train_loss = losses.total() / max(steps - first_step, 0.001)
        metrics = speed_metrics("train", time.time() - start, num_samples * (steps - first_step) / max(plan.max_steps, 1),
                                steps - first_step)
        metrics.update(total_flos=self.state.total_flos, train_loss=train_loss)
        self.log(metrics)
        if self.args.load_best_model_at_end and self.state.best_model_checkpoint is not None:
            load_model_weights(self.model, self.state.best_model_checkpoint)
        if self.args.should_save and self.state.best_model_checkpoint is not None and self.args.save_total_limit == 1:
            # As transformers: the newest checkpoint was kept beside the best only to resume; training is over.
            best = Path(self.state.best_model_checkpoint).resolve()
            for path in list_checkpoints(self.args.output_dir):
                if path.resolve() != best:
                    delete_checkpoint(path)
        self._fire("on_train_end")
        return TrainOutput(steps, train_loss, metrics)

    def _setup_training(self, trial: Any) -> tuple[TrainState, tkdata.StepPlan, float]:
        """Model (model_init), step plan, optimizer, schedule, the first TrainState and a fresh TrainerState."""
        args = self.args
        if self.model_init is not None:
            set_seed(args.seed)
            self.model = self.call_model_init(trial).to(args.device)
            self.optimizer = self.lr_scheduler = self._flop_params = None
        if args.gradient_checkpointing:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs)
        if args.fsdp and not is_sharded(self.model):  # before the optimizer: sharding replaces the parameters
            config = args.fsdp_config
            shard_model(self.model, layers=config.get("transformer_layer_cls_to_wrap"),
                        reshard_after_forward=str(config.get("reshard_after_forward", True)).lower() == "true")
        if self.train_dataset is None:
            raise ConfigError("Trainer.train() needs a train_dataset; pass Trainer(train_dataset=...).")
        sized = tkdata.has_length(self.train_dataset)
        if sized:
            self._check_train_dataset()
        plan = tkdata.plan_steps(
            num_batches=tkdata.num_batches(len(self.train_dataset), args.train_batch_size, drop_last=args.dataloader_drop_last,
                                           world_size=args.world_size) if sized else None,
            gradient_accumulation_steps=args.gradient_accumulation_steps, num_train_epochs=args.num_train_epochs, max_steps=args.max_steps,
        )
        total_batch = args.train_batch_size * args.gradient_accumulation_steps * args.world_size
        num_samples = plan.max_steps * total_batch if args.max_steps > 0 or not sized else len(self.train_dataset) * args.num_train_epochs
        warmup = args.warmup_steps_for(plan.max_steps)
        if warmup > plan.max_steps and self.lr_scheduler is None:
            warnings.warn(f"TrainingArguments(warmup_steps={args.warmup_steps}): the warmup ({warmup} steps) is longer than "
                          f"the run ({plan.max_steps} steps), so the learning rate never reaches learning_rate. Fix: "
                          "lower warmup_steps (a value below 1 is a ratio of the run).", TrainkitWarning, stacklevel=3)
        self.create_optimizer_and_scheduler(plan.max_steps)
        self.model_wrapped = self._wrap_model()
        precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "no"
        compile_options = {"backend": args.torch_compile_backend or "inductor", "mode": args.torch_compile_mode}
        state = init_state(self.model_wrapped, self.optimizer, schedule=self.lr_scheduler, seed=args.seed, precision=precision,
                           compile=compile_options if args.torch_compile else False)
        self.model_wrapped = state.model
        self._train_state = state
        self.state = TrainerState(
            max_steps=plan.max_steps, num_train_epochs=plan.num_train_epochs, train_batch_size=args.train_batch_size,
            logging_steps=args.resolve_steps(args.logging_steps, plan.max_steps),
            eval_steps=args.resolve_steps(args.eval_steps or args.logging_steps, plan.max_steps),
            save_steps=args.resolve_steps(args.save_steps, plan.max_steps), **self._process_flags(),
            stateful_callbacks=[cb for cb in self.callback_handler.callbacks if isinstance(cb, ExportableState)],
        )
        self.state.log_history = []
        handler = self.callback_handler
        handler.model, handler.optimizer, handler.lr_scheduler = self.model, self.optimizer, self.lr_scheduler
        return state, plan, num_samples

    def _run_epoch(
        self, state: TrainState, epoch: int, batches: Any, plan: tkdata.StepPlan, losses: LossTracker,
        ignore_keys: list[str] | None, *, seen: int = 0,
    ) -> TrainState:
        """One epoch of windows through train_step, with transformers' events, logging, evaluation and saving."""
        args = self.args
        step = functools.partial(train_step, max_grad_norm=args.max_grad_norm, label_names=self.label_names,
                                 on_nonfinite=args.on_nonfinite, **self._loss_options())
        hooks = step_hooks(self.callback_handler.callbacks, self._fire)
        self.callback_handler.train_dataloader = batches
        self._fire("on_epoch_begin")
        for window in tkdata.windows(batches, args.gradient_accumulation_steps):
            self._fire("on_step_begin")
            if self._first_step_checked:
                state, out = step(state, window, hooks=hooks)
            else:  # the first step is the dry run: a failure (before any update) is explained in terms of the batch
                state, out = self._first_step(step, state, window, hooks)
            if isinstance(self.lr_scheduler, torch.optim.lr_scheduler.LambdaLR) and not out.skipped:
                # The rate comes from the schedule read out of the LambdaLR; the object is stepped as
                # transformers does only so that last_epoch and get_last_lr() (read by callbacks) follow.
                self.lr_scheduler.step()
            self._train_state = state
            seen += len(window)
            self._current_flos += sum(float(self.floating_point_ops(batch)) for batch in window)
            losses.add(out)
            self.state.global_step = state.step
            self.state.epoch = epoch + seen / plan.batches_per_epoch
            self._fire("on_step_end")
            if self._stop_requested():  # finish this step, commit a checkpoint, stop cleanly
                self.control.should_save = self.control.should_training_stop = True
            self._maybe_log_evaluate_save(losses, ignore_keys)
            if self.control.should_epoch_stop or self.control.should_training_stop:
                break
        else:  # the epoch's data is exhausted: a checkpoint from here on resumes at the next epoch
            state = self._train_state = state.replace(progress=state.progress.next_epoch())
        self._fire("on_epoch_end")
        self._maybe_log_evaluate_save(losses, ignore_keys)
        return state

    def _first_step(self, step: Callable[..., Any], state: TrainState, window: list[Any], hooks: StepHooks) -> Any:
        """train()'s first step, whose failure (before any update) first_batch_checked explains in terms of the
        batch; once a callback has fired inside the step, an error is the callback's own and passes unchanged."""
        fired: list[bool] = []

        def watched(hook: Callable[..., Any] | None) -> Callable[..., Any] | None:
            return None if hook is None else lambda *a: (fired.append(True), hook(*a))[1]

        hooks = StepHooks(**{name: watched(hook) for name, hook in attrs.asdict(hooks, recurse=False).items()})
        self._first_step_checked = True
        return first_batch_checked(
            lambda: step(state, window, hooks=hooks),
            model=self.model, batch=window[0], label_names=self.label_names, where="the first training batch",
            unless=lambda: bool(fired),
        )

    def check(self) -> dict[str, float]:
        """Dry run: the forward and loss of the first training batch and of each evaluation set's first
        batch, with no update (eval mode, no gradient; modes and random streams restored).

        ``train()`` makes the same checks (its first step is the training dry run), so this is for
        finding problems without starting a run: every data/model mismatch raises the error it
        would raise in ``train()``, naming the batch's columns and shapes and the fix.

        Returns:
            ``{"train_loss": ..., "eval_loss": ...}`` for the batches checked (``eval_<name>_loss``
            for a dict of evaluation sets).

        Raises:
            ConfigError: a dataset that gives no batch, or a batch the model cannot take or that
                gives no loss.

        Example:
            >>> import tempfile, torch
            >>> from trainkit import ConfigError, Trainer, TrainingArguments
            >>> class Regressor(torch.nn.Module):
            ...     def __init__(self):
            ...         super().__init__()
            ...         self.linear = torch.nn.Linear(2, 1)
            ...     def forward(self, x, labels=None):
            ...         out = {"logits": self.linear(x).squeeze(-1)}
            ...         if labels is not None:
            ...             out["loss"] = torch.nn.functional.mse_loss(out["logits"], labels)
            ...         return out
            >>> args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=4, report_to="none")
            >>> rows = [{"x": [1.0, 2.0], "labels": 3.0}] * 8
            >>> sorted(Trainer(model=Regressor(), args=args, train_dataset=rows).check())
            ['train_loss']
            >>> unlabelled = [{"x": [1.0, 2.0]}] * 8  # the model computes no loss without labels
            >>> try:
            ...     Trainer(model=Regressor(), args=args, train_dataset=unlabelled).check()
            ... except ConfigError as error:
            ...     print(str(error))  # doctest: +ELLIPSIS
            the first training batch {'x': (4, 2) float32}: Regressor's output has no 'loss' (it returned keys ['logits']); the batch has no 'labels' column ...
        """
        losses: dict[str, float] = {}
        if self.train_dataset is not None:
            if tkdata.has_length(self.train_dataset):
                self._check_train_dataset()
            batch = next(iter(self.get_train_dataloader(epoch=0)))
            losses["train_loss"] = dry_run(self._eval_state(), batch, label_names=self.label_names,
                                           where="the first training batch", **self._loss_options())
        if self.eval_dataset is not None:
            losses.update(self._check_eval_batches())
        return losses

    def _check_train_dataset(self) -> None:
        args = self.args
        check_train_dataset(self.train_dataset, batch_size=args.train_batch_size, world_size=args.world_size,
                            drop_last=args.dataloader_drop_last)

    def _check_eval_batches(self) -> dict[str, float]:
        if is_sharded(self.model) and self.args.world_size > 1:
            # A sharded forward is a collective: evaluate() keeps the processes in lockstep; a one-batch
            # check on each process's own share could not (a process without a batch would leave the others waiting).
            return {}
        sets = self.eval_dataset if isinstance(self.eval_dataset, dict) else {"": self.eval_dataset}
        losses = {}
        for name, dataset in sets.items():
            key = f"eval_{name}_loss" if name else "eval_loss"
            batch = next(iter(self.get_eval_dataloader(dataset)), None)
            if batch is None and self.args.world_size > 1:
                continue  # this process's share is empty (fewer batches than processes): legal, evaluate() copes
            if batch is None:
                raise ConfigError(f"Trainer(eval_dataset{f'[{name!r}]' if name else ''}=...): the dataset gives no batch "
                                  "(is it empty?). Fix: check the split and any filter() applied to it.")
            loss = dry_run(self._eval_state(), batch, label_names=self.label_names,
                           require_loss=_all_labels(batch, self.label_names) is not None,
                           where=f"the first evaluation batch{f' of {name!r}' if name else ''}", **self._eval_loss_options(None))
            if loss is not None:
                losses[key] = loss
        return losses

    def _stop_requested(self) -> bool:
        """SIGTERM seen, by any process: they must all stop after the same step, or the next collective hangs."""
        if self.args.world_size == 1:
            return self._sigterm.requested
        return distributed.all_reduce_metrics({"stop": float(self._sigterm.requested)}, op="max")["stop"] > 0

    def store_flos(self) -> None:
        """Add every process's floating-point operations since the last call to ``state.total_flos``."""
        flos = self._current_flos
        if self.args.world_size > 1:
            flos = distributed.all_reduce_metrics({"flos": flos}, op="sum")["flos"]
        self.state.total_flos += flos
        self._current_flos = 0.0

    def _fingerprint(self) -> dict[str, Any]:
        args = self.args
        return data_fingerprint(
            batch_size=args.train_batch_size, gradient_accumulation_steps=args.gradient_accumulation_steps,
            world_size=args.world_size, dataset_length=len(self.train_dataset) if tkdata.has_length(self.train_dataset) else None,
            seed=args.data_seed if args.data_seed is not None else args.seed,
        )

    def _resume(self, resume_from_checkpoint: Any, state: TrainState) -> TrainState:
        """Load a checkpoint into the model, optimizer, TrainerState and loss bookkeeping; return the state."""
        path = resolve_checkpoint(resume_from_checkpoint, self.args.output_dir, latest_checkpoint)
        extra = read_checkpoint_metadata(path).get("extra", {})
        same_data = check_fingerprint(extra.get("data"), self._fingerprint(), ignore_data_skip=self.args.ignore_data_skip)
        state = load_checkpoint(path, state.model, self.optimizer, schedule=self.lr_scheduler)
        if not same_data:  # ignore_data_skip: keep weights and optimizer, restart the current epoch
            state = state.replace(progress=attrs.evolve(state.progress, position=0))
        self._train_state = state
        max_steps, steps = self.state.max_steps, (self.state.logging_steps, self.state.eval_steps, self.state.save_steps)
        self.state = TrainerState.load_from_json(str(path / "trainer_state.json"))
        for flag, value in self._process_flags().items():  # the file holds the saving process's flags
            setattr(self.state, flag, value)
        self.state.max_steps, (self.state.logging_steps, self.state.eval_steps, self.state.save_steps) = max_steps, steps
        if isinstance(self.lr_scheduler, torch.optim.lr_scheduler.LambdaLR):  # keep its counters in step for readers
            self.lr_scheduler.last_epoch = state.step
            self.lr_scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        self._losses.restore(extra.get("loss_tracker"))
        return state

    def _maybe_log_evaluate_save(self, losses: LossTracker, ignore_keys: list[str] | None) -> None:
        if self.control.should_log and losses.pending:
            self.log(losses.flush())
        self._maybe_evaluate_and_save(ignore_keys)

    def _maybe_evaluate_and_save(self, ignore_keys: list[str] | None) -> None:
        if self.control.should_evaluate:
            metrics = self._evaluate(ignore_keys)
            new_best = self._update_best(metrics)
            if self.args.save_strategy == "best":
                self.control.should_save = new_best
        if self.control.should_save:
            self._save_checkpoint()
            self._fire("on_save")

    def _evaluate(self, ignore_keys: list[str] | None, skip_scheduler: bool = False) -> dict[str, float]:
        metrics = self.evaluate(ignore_keys=ignore_keys)
        if isinstance(self.lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and not skip_scheduler:
            self.lr_scheduler.step(metrics[self._metric_key(metrics)])
        return metrics

    def _metric_key(self, metrics: dict[str, float]) -> str:
        name = self.args.metric_for_best_model or "loss"
        key = name if name.startswith("eval_") else f"eval_{name}"
        if key not in metrics:
            raise MetricNotFoundError(
                f"TrainingArguments(metric_for_best_model={self.args.metric_for_best_model!r}): {key!r} is not among the "
                f"evaluation metrics {sorted(metrics)}. Set metric_for_best_model to one of them, or return it from compute_metrics."
            )
        return key

    def _update_best(self, metrics: dict[str, float]) -> bool:
        if self.args.metric_for_best_model is None:
            return False
        value = metrics[self._metric_key(metrics)]
        better = self.args.greater_is_better
        if self.state.best_metric is None or (value > self.state.best_metric if better else value < self.state.best_metric):
            self.state.best_metric = value
            if self.args.save_strategy in ("steps", "epoch", "best"):
                self.state.best_global_step = self.state.global_step
            return True
        return False

    def _save_checkpoint(self) -> None:
        """Write ``checkpoint-{step}``: every process arrives, the saving one commits, every process waits
        for the commit, so a kill leaves either no new checkpoint or a complete one, and none moves on early."""
        args, step = self.args, self.state.global_step
        self.store_flos()
        if self.args.metric_for_best_model is not None and self.state.best_global_step == step:
            self.state.best_model_checkpoint = str(Path(args.output_dir) / f"checkpoint-{step}")
        distributed.barrier()
        if args.should_save or is_sharded(self.model):  # under FSDP gathering the state takes every process
            self._write_checkpoint()
        distributed.barrier()

    def _write_checkpoint(self) -> None:
        with self._quiet_unless_bars():
            self._write_checkpoint_files()

    def _quiet_unless_bars(self) -> contextlib.AbstractContextManager[None]:
        """disable_tqdm silences transformers' own bars too (save_pretrained's "Writing model shards")."""
        return transformers_bars(False) if self.args.disable_tqdm else contextlib.nullcontext()

    def _write_checkpoint_files(self) -> None:
        args, step = self.args, self.state.global_step
        if args.save_only_model or self._train_state is None or not self._train_state.is_live:
            write_checkpoint(args.output_dir, step, model=self.model, processing_class=self.processing_class,
                             trainer_state=self.state, args_json=args.to_json_string())
        else:
            extra = {"data": self._fingerprint(), "loss_tracker": self._losses.snapshot()}
            save_checkpoint(self._train_state, args.output_dir, processing_class=self.processing_class,
                            trainer_state=self.state, args_json=args.to_json_string(), extra=extra)
        if args.should_save:
            rotate_checkpoints(args.output_dir, limit=args.save_total_limit, keep=self.state.best_model_checkpoint)

    # ---- evaluation and prediction -----------------------------------------------------------

    def _eval_state(self) -> TrainState:
        if self._train_state is not None and self._train_state.is_live:
            return self._train_state
        precision = "bf16" if self.args.bf16 else "fp16" if self.args.fp16 else "no"
        return init_state(self.model, self.optimizer or torch.optim.SGD(self.model.parameters(), lr=0.0), seed=self.args.seed, precision=precision)

    def _run_eval(self, dataset: Any, ignore_keys: list[str] | None, prefix: str, event: str) -> Any:
        batches = self.get_eval_dataloader(dataset)
        self.callback_handler.eval_dataloader = batches
        options = self._eval_loss_options(ignore_keys)
        result = evaluate_batches(
            self._eval_state(), batches, compute_metrics=self.compute_metrics,
            preprocess_logits_for_metrics=self.preprocess_logits_for_metrics,
            # transformers gathers no predictions for evaluate() without compute_metrics.
            prediction_loss_only=self.args.prediction_loss_only or (event == "on_evaluate" and self.compute_metrics is None),
            include_for_metrics=self.args.include_for_metrics, ignore_keys=ignore_keys, label_names=self.label_names,
            metric_key_prefix=prefix, on_batch=lambda *_: self._fire("on_prediction_step"), **options,
        )
        return result

    def evaluate(self, eval_dataset: Any = None, ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Evaluate the model on ``eval_dataset`` (default: the Trainer's) and log the metrics.

        Args:
            eval_dataset: a dataset, or a dict of them (each evaluated, with keys
                ``{metric_key_prefix}_{name}_*``); None: the Trainer's ``eval_dataset``.
            ignore_keys: output keys left out of the predictions.
            metric_key_prefix: the prefix of every metric key.

        Returns:
            transformers' metrics: ``eval_loss``, ``compute_metrics``' values prefixed,
            ``eval_runtime``, ``eval_samples_per_second``, ``eval_steps_per_second``.

        Raises:
            ConfigError: a batch that cannot be gathered, or a failing ``compute_metrics`` (the
                shapes it received are named).
        """
        datasets = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(datasets, dict):
            metrics = {}
            for name, dataset in datasets.items():
                metrics.update(self.evaluate(dataset, ignore_keys, f"{metric_key_prefix}_{name}"))
            return metrics
        result = self._run_eval(datasets, ignore_keys, metric_key_prefix, "on_evaluate")
        metrics = dict(result.metrics)
        self.log(metrics)
        self._fire("on_evaluate", metrics=metrics)
        return metrics

    def predict(self, test_dataset: Any, ignore_keys: list[str] | None = None, metric_key_prefix: str = "test") -> PredictionOutput:
        """Run the model on ``test_dataset`` and gather its outputs.

        Args:
            test_dataset: the dataset to predict.
            ignore_keys: output keys left out of the predictions.
            metric_key_prefix: the prefix of the metric keys.

        Returns:
            ``PredictionOutput(predictions, label_ids, metrics)``: numpy arrays in dataset order
            (sequences of different lengths padded with -100), and the metrics as in
            :meth:`evaluate` (``test_*``).
        """
        result = self._run_eval(test_dataset, ignore_keys, metric_key_prefix, "on_predict")
        self._fire("on_predict", metrics=result.metrics)
        return PredictionOutput(predictions=result.predictions, label_ids=result.label_ids, metrics=result.metrics)

    # ---- logging, saving, callbacks ----------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Record ``logs`` in ``state.log_history`` (with epoch and step) and fire ``on_log``."""
        if self.state.epoch is not None:
            logs["epoch"] = self.state.epoch
        if self.state.log_history is None:
            self.state.log_history = []
        self.state.log_history.append({**logs, "step": self.state.global_step})
        self._fire("on_log", logs=logs)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """Save the model and the processing class to ``output_dir`` (default ``args.output_dir``).

        A ``PreTrainedModel`` is saved with ``save_pretrained`` (it reloads with
        ``from_pretrained``); any other module as ``model.safetensors``. Only the saving process
        writes (under FSDP every process gathers, rank 0 writes).

        Args:
            output_dir: the folder to write into; created if needed.
        """
        if self.args.should_save or is_sharded(self.model):  # FSDP: every process gathers, rank 0 writes
            with self._quiet_unless_bars():
                save_model(self.model, output_dir or self.args.output_dir, processing_class=self.processing_class)

    def add_callback(self, callback: Any) -> None:
        """Add a ``TrainerCallback`` (an instance or a class)."""
        self.callback_handler.add_callback(callback)

    def pop_callback(self, callback: Any) -> Any:
        """Remove a callback (an instance or a class) and return it."""
        return self.callback_handler.pop_callback(callback)

    def remove_callback(self, callback: Any) -> None:
        """Remove a callback (an instance or a class)."""
        self.callback_handler.remove_callback(callback)
