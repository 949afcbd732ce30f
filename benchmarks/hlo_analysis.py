"""What each op of a compiled XLA program reads, computes and stands for.

Why: the profiler (`profile_ours.py`) and the GPU roofline
(`gpu_roofline.py`) both judge kernels by what their HLO says: the bytes an
op moves, the matmul FLOPs it does (dots, GEMM fusions, cuBLAS and cuDNN
attention calls), the model code that emitted it (its `op_name` metadata)
and its kind of work. Both must read the compiled text the same way, or a
measured kernel and its bound would be counted differently. Only the text is
parsed: nothing here needs JAX or a device.
"""

import collections
import math
import re

_OP_NAME = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name="([^"]*)"')


def op_names_from_hlo(hlo_text):
  """HLO instruction name -> op_name metadata, from compiled HLO text."""
  names = {}
  for line in hlo_text.splitlines():
    m = _OP_NAME.match(line)
    if m:
      names[m.group(1)] = m.group(2)
  return names


# Bytes per element of HLO's element types (sub-byte types rounded up).
_DTYPE_BYTES = {
  'pred': 1,
  's4': 1,
  'u4': 1,
  's8': 1,
  'u8': 1,
  's16': 2,
  'u16': 2,
  'f16': 2,
  'bf16': 2,
  's32': 4,
  'u32': 4,
  'f32': 4,
  's64': 8,
  'u64': 8,
  'f64': 8,
  'c64': 8,
  'c128': 16,
}
_SHAPE = re.compile(r'\b([a-z]\w*?)\[([\d,]*)\]')
_INSTRUCTION = re.compile(
  r'^\s*(?:ROOT )?%?([\w.\-]+) = (.*?) ([\w\-]+)\(([^)]*)\)'
)


def shape_bytes(text):
  """Bytes of every array shape written in `text` ('bf16[4,8]{1,0}', tuples)."""
  total = 0
  for dtype, dims in _SHAPE.findall(text):
    size = _DTYPE_BYTES.get(dtype)
    if size is None and dtype.startswith('f8'):
      size = 1
    if size is not None:
      total += size * math.prod(int(d) for d in dims.split(',') if d)
  return total


def hlo_instructions(hlo_text):
  """(computation, name, shape, opcode, operand names, rest of the line) for
  each instruction of compiled HLO text."""
  computation = None
  for line in hlo_text.splitlines():
    head = re.match(r'^(?:ENTRY )?%([\w.\-]+) \(.*\{\s*$', line)
    if head:
      computation = head.group(1)
      continue
    m = _INSTRUCTION.match(line)
    if m:
      name, shape, opcode, args = m.groups()
      yield (
        computation,
        name,
        shape,
        opcode,
        re.findall(r'%([\w.\-]+)', args),
        line[m.end() :],
      )


def op_bytes_from_hlo(hlo_text):
  """HLO instruction name -> bytes it reads and writes, from compiled HLO.

  Its output plus its operands' outputs, each once: what one execution of a
  kernel for it must move through device memory at least (an estimate: an
  operand read twice, or a slice of one, moves more or less). Instruction
  names are unique within a module, so the operands resolve by name.
  """
  out_bytes, operands = {}, {}
  for _, name, shape, _, args, _ in hlo_instructions(hlo_text):
    out_bytes[name] = shape_bytes(shape)
    operands[name] = args
  return {
    name: out + sum(out_bytes.get(o, 0) for o in operands[name])
    for name, out in out_bytes.items()
  }


def _dims(shape_text):
  """[dims] of the first array shape in `shape_text` ('bf16[4,8]{1,0}')."""
  m = _SHAPE.search(shape_text)
  return [int(d) for d in m.group(2).split(',') if d] if m else []


def op_flops_from_hlo(hlo_text):
  """HLO instruction name -> matmul FLOPs of one execution.

  Counts dots: a `dot` instruction, a fusion whose computation holds dots
  (XLA's Triton GEMM fusions), and cuBLAS GEMM custom calls (their
  contracting dimensions are in the backend config): 2 x output elements x
  the contracted size. Attention kernels (cuDNN custom calls) and
  convolutions are not counted.
  """
  shapes, calls, dots = {}, {}, {}  # dots: name -> (lhs operand, dims)
  members = collections.defaultdict(list)
  for computation, name, shape, opcode, operands, rest in hlo_instructions(
    hlo_text
  ):
    shapes[name] = shape
    members[computation].append(name)
    contracting = None
    if opcode == 'dot':
      c = re.search(r'lhs_contracting_dims=\{([\d,]*)\}', rest)
      contracting = [int(d) for d in c.group(1).split(',') if d] if c else []
    elif opcode == 'custom-call' and 'gemm' in rest.lower():
      c = re.search(r'"lhs_contracting_dimensions":\[([^\]]*)\]', rest)
      contracting = (
        [int(d) for d in re.findall(r'\d+', c.group(1))] if c else None
      )
    if contracting is not None and operands:
      dots[name] = (operands[0], contracting)
    called = re.search(r'calls=%([\w.\-]+)', rest)
    if called and opcode == 'fusion':
      calls[name] = called.group(1)

  def dot_flops(name):
    lhs, contracting = dots[name]
    lhs_dims = _dims(shapes.get(lhs, ''))
    if any(d >= len(lhs_dims) for d in contracting):
      return 0
    return (
      2
      * math.prod(_dims(shapes[name]))
      * math.prod(lhs_dims[d] for d in contracting)
    )

  out = {name: dot_flops(name) for name in dots}
  for name, comp in calls.items():
    inner = sum(dot_flops(n) for n in members.get(comp, ()) if n in dots)
    if inner:
      out[name] = inner
  return {k: v for k, v in out.items() if v}


def attention_flops_from_hlo(hlo_text):
  """HLO instruction name -> matmul FLOPs of a cuDNN attention call.

  Read from the call's operand shapes (`operand_layout_constraints`: q, k, v
  as [B, T, N, D]): the forward does QK^T and PV, 2 B N T S (Dqk + Dv);
  the backward recomputes QK^T and does dP, dV, dQ and dK,
  2 B N T S (3 Dqk + 2 Dv).
  """
  out = {}
  for _, name, _, opcode, _, rest in hlo_instructions(hlo_text):
    target = re.search(r'custom_call_target="(__cudnn\$fmha\w*)"', rest)
    layouts = re.search(
      r'operand_layout_constraints=\{((?:[^{}]|\{[^{}]*\})*)\}', rest
    )
    if opcode != 'custom-call' or not target or not layouts:
      continue
    shapes = [_dims(s) for s in re.findall(r'\w+\[[\d,]*\]', layouts.group(1))]
    if len(shapes) < 3 or any(len(x) != 4 for x in shapes[:3]):
      continue
    (b, t, n, d_qk), (_, s, _, _), (_, _, _, d_v) = shapes[:3]
    matmul_widths = (
      (3 * d_qk + 2 * d_v) if 'Backward' in target.group(1) else (d_qk + d_v)
    )
    out[name] = 2 * b * n * t * s * matmul_widths
  return out


def model_location(op_name):
  """'jit(step)/transpose(jvp(PerceiverIO))/encoder/.../dot_general' ->
  ('backward', 'encoder/.../dot_general')."""
  phase = 'backward' if 'transpose(' in op_name else 'forward'
  # Shared latent layers: fold the layer index so all 26 layers add up.
  op_name = re.sub(r'self_attend_\d+', 'self_attend_*', op_name)
  parts = []
  for p in op_name.split('/'):
    # Transform wrappers, and the scopes that Flax's custom VJP adds around
    # a block (`_call_block`), which repeat the module path.
    if re.match(
      r'^(jit|jvp|transpose|vmap|remat|checkpoint)\(', p
    ) or re.search(r'\.(shared_forward_fn|_layers)$', p):
      continue
    if p in parts:  # The module path again (wrappers repeat it).
      continue
    parts.append(p)
  return phase, '/'.join(parts) or op_name


# Kernel or HLO op name fragment -> category, first match wins.
_CATEGORIES = (
  ('attention (cuDNN)', ('cudnn', 'fmha', 'flash', 'sdpa')),
  ('convolution', ('conv',)),
  (
    'matmul',
    ('gemm', 'cublas', 'cutlass', 'xmma', 'nvjet', 'dot', 'matmul', 'wgmma'),
  ),
  ('copy / transpose', ('copy', 'transpose', 'memcpy', 'memset')),
)


def op_category(*names):
  """'matmul', 'attention (cuDNN)', ... for a GPU kernel and its HLO op."""
  # 'convert' is no convolution (XLA's loop_convert_fusion kernels would
  # otherwise count as convolutions).
  text = ' '.join(n.lower() for n in names if n).replace('convert', '')
  for category, fragments in _CATEGORIES:
    if any(f in text for f in fragments):
      return category
  return 'other fusions (elementwise, reductions)'
