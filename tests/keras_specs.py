"""Small specs that between them use every layer kind and most of their options.

Shared by the Keras backend tests and the cross-framework tests; inputs are small so that
building them in a framework takes well under a second each.
"""

LAYER_SPECS = {
    "convs": """
model convs
input 17x17x4
conv 8 3x3 same relu
conv 8 3x3 stride=2 padding=1 leaky_relu
conv 8 3x3 groups=2 dilation=2 nobias gelu
bn
dwconv 3x3 multiplier=2 same hard_sigmoid
dwconv 3x3 stride=2 padding=1 nobias
sepconv 8 3x3 same hard_swish
sepconv 6 3x3 stride=2 multiplier=2 nobias silu
deconv 4 3x3 stride=2 padding=1 output_padding=1 elu
deconv 4 2x2 stride=2 same tanh
deconv 3 3x3 stride=2 sigmoid
""",
    "same": """
model same
input 16x15x3
conv 6 3x3 stride=2 same
conv 6 4x4 same
deconv 4 3x3 stride=2 same relu
deconv 4 1x1 stride=2 same
deconv 4 4x4 stride=3 same
maxpool 3 stride=2 same
avgpool 3 stride=2 same
conv 5 5x5 stride=3 same
""",
    "pools": """
model pools
input 31x29x3
maxpool 3 stride=2 padding=1
avgpool 3 stride=2 padding=1
maxpool 3 stride=2 ceil=true
avgpool 2 same
avgpool 3 stride=2 ceil=true padding=1
maxpool 2 same
gap keepdims
gmp
""",
    "core": """
model core
# the input line's arguments make a `preprocess` node: Rescaling, then Normalization
input 12x12x3 scale=1/255 mean=(0.4, 0.5, 0.6) std=(0.2, 0.3, 0.4)
rescale 0.5 0.1
zeropad (1, 2, 0, 3)
upsample 2 bilinear
upsample 2
lrn 5
conv 4 3x3 stride=2
bn eps=1e-3 momentum=0.99 noscale
identity
flatten
dropout 0.3
dense 48 relu6
reshape 4x4x3
flatten
dense 10 nobias softmax
""",
    "modern": """
model modern
input 11x13x8
normalize mean=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8) variance=2
rescale scale=(1, 2, 3, 4, 5, 6, 7, 8) offset=0.5
layernorm eps=1e-6
groupnorm 4
layerscale 0.5
dense 8 per_pixel gelu
zeropad (0, 1, 0, 1)
crop (1, 0, 1, 0)
stochastic_depth 0.2
avgpool 3 stride=1 padding=1 count_pad=true
mixed = shuffle 2
left = split 2 0
right = split 2 1 from=mixed
conv 4 1x1 from=right
concat left
adaptive_avgpool 5x3
adaptive_maxpool 2x2
gap
layernorm nocenter
""",
    "acts": """
model acts
input 8
dense 8
relu; relu6; leaky_relu 0.2; leaky_relu; elu; elu 0.5; sigmoid; tanh; silu; gelu
hard_swish; hard_sigmoid; softmax
bn nocenter
""",
    "graph": """
model graph
input 16x16x3
stem = conv 8 3x3 same
residual relu { conv 8 3x3 same; bn; relu; conv 8 3x3 same; bn }
residual { conv 16 3x3 stride=2 same; bn } shortcut { conv 16 1x1 stride=2; bn }
feat = parallel concat relu { branch a { conv 4 1x1 }; branch b { conv 4 3x3 same }; branch { } }
g = gap keepdims
conv 24 1x1 sigmoid
gated = multiply feat
head = gap
output gated, head
""",
    "detect": """
model detect
input 32x32x3
c3 = conv 8 3x3 stride=2 same relu
c4 = conv 8 3x3 stride=2 same relu
c5 = conv 16 3x3 stride=2 same relu
retina = detect c3 c4 classes=3 strides=(2, 4) sizes=(8, 16) octaves=2 ratios=(0.5, 1.0) tower=2
fcos = detect c3 c4 classes=2 strides=(2, 4) tower=1 norm=gn groups=4 centerness box_relu=true
ssd = detect c4 c5 classes=3 strides=(4, 8) separate depthwise tower=1 norm=bn relu6 predictor=1
yolo = detect c3 c4 classes=2 strides=(2, 4) sizes=(8, 16) ratios=(0.5, 1.0, 2.0) tower=1 \
  width=12 silu objectness box_relu=true
output retina, fcos, ssd, yolo
""",
}
