"""``cnnblas export CHECKPOINT OUT.onnx``: a trained model as an ONNX file.

Rebuilds the model saved by ``cnnblas train --checkpoint`` (see
:func:`cnnblas.nn.model_from_checkpoint`) and writes it with :func:`cnnblas.onnx.export`
for the input the model saw in training: the images' shape from the
checkpoint's metadata, upsampled as training did. The graph starts at the
model's input, so images must be prepared as ``cnnblas predict`` does
(pixels scaled, upsampled, standardised); the command prints how.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cnnblas.cli.common import ERRORS, add_import_option, import_user_modules, set_threads

__all__ = ["add_command", "run_export", "model_input_shape"]


def add_command(commands) -> None:
    """Add ``export`` to an argparse sub-parsers object."""
    export = commands.add_parser(
        "export", help="write a checkpoint of 'cnnblas train' as an ONNX model",
        description="Write the model of a checkpoint as an ONNX file (needs the onnx "
                    "package: pip install 'cnnblas[onnx]').",
    )
    export.add_argument("checkpoint", type=Path, help="a .npz written by cnnblas train")
    export.add_argument("output", type=Path, metavar="OUT.onnx", help="the ONNX file to write")
    export.add_argument("--opset", type=int, default=17,
                        help="ONNX opset of the default domain (default: %(default)s)")
    export.add_argument("--batch-size", type=int, default=None,
                        help="fix the batch axis to this size (default: a symbolic 'N')")
    export.add_argument("--threads", type=int, default=None,
                        help="threads for kernels and BLAS (default: all cores)")
    add_import_option(export)
    export.set_defaults(func=run_export)


def model_input_shape(metadata: dict, path: Path) -> tuple[int, ...]:
    """(C, H, W) of the model's input: the training images' shape times the upsampling."""
    spec = metadata.get("input", {})
    shape = spec.get("shape")
    if not isinstance(shape, list) or len(shape) != 3:
        raise ValueError(f"{path}: the checkpoint's metadata has no input shape "
                         "(expected metadata['input']['shape'] = [C, H, W])")
    upsample = int(spec.get("upsample", 1))
    return int(shape[0]), int(shape[1]) * upsample, int(shape[2]) * upsample


def run_export(args) -> int:
    """Run ``cnnblas export``; an error of :data:`~cnnblas.cli.common.ERRORS` exits 1."""
    try:
        return _export(args)
    except ERRORS as error:
        print(f"cnnblas export: error: {error}", file=sys.stderr)
        return 1


def _export(args) -> int:
    from cnnblas.nn import model_from_checkpoint
    from cnnblas.onnx import export

    set_threads(args.threads)
    import_user_modules(args.imports)
    model, saved = model_from_checkpoint(args.checkpoint)
    shape = model_input_shape(saved.metadata, args.checkpoint)
    export(model, args.output, shape, opset=args.opset, batch_size=args.batch_size)
    spec = saved.metadata.get("input", {})
    batch = args.batch_size if args.batch_size is not None else "N"
    print(f"{saved.metadata['model']['name']} written to {args.output}: input 'input' "
          f"({batch}, {', '.join(map(str, shape))}) float32, output 'output' (logits)")
    print(f"prepare images as in training: pixels / {spec.get('pixel_max', 255)}, upsampled "
          f"x{spec.get('upsample', 1)}, then (x - mean) / std with mean "
          f"{spec.get('mean', 0.0)} and std {spec.get('std', 1.0)}")
    return 0
