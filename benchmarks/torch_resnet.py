"""A hand-written PyTorch ResNet with torchvision's attribute names, for the
equivalence tests and the whole-network benchmarks (torchvision itself cannot
be installed beside this torch).

Written from the published architecture (He et al. 2016; torchvision's
documented module names), not from cnnblas: it is the independent side of
the comparison. ``torch_resnet_classes(torch)`` returns the classes, so that
this file imports without torch.
"""

from __future__ import annotations


def torch_resnet_classes(torch):
    """``(BasicBlock, Bottleneck, ResNet)`` as ``torch.nn.Module`` classes."""
    tnn = torch.nn

    def projection(inplanes, out_channels, stride):
        return tnn.Sequential(tnn.Conv2d(inplanes, out_channels, 1, stride, bias=False),
                              tnn.BatchNorm2d(out_channels))

    class BasicBlock(tnn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = tnn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.relu = tnn.ReLU()
            self.conv2 = tnn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x):
            shortcut = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + shortcut)

    class Bottleneck(tnn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = tnn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(planes)
            self.conv2 = tnn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(planes)
            self.conv3 = tnn.Conv2d(planes, 4 * planes, 1, bias=False)
            self.bn3 = tnn.BatchNorm2d(4 * planes)
            self.relu = tnn.ReLU()
            self.downsample = downsample

        def forward(self, x):
            shortcut = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            return self.relu(self.bn3(self.conv3(out)) + shortcut)

    class ResNet(tnn.Module):
        def __init__(self, block, layers, num_classes, imagenet_stem):
            super().__init__()
            widths = (64, 128, 256, 512) if imagenet_stem else (16, 32, 64)
            if imagenet_stem:
                self.conv1 = tnn.Conv2d(3, 64, 7, 2, 3, bias=False)
            else:
                self.conv1 = tnn.Conv2d(3, 16, 3, 1, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(widths[0])
            self.relu = tnn.ReLU()
            self.maxpool = tnn.MaxPool2d(3, 2, 1) if imagenet_stem else None
            inplanes = widths[0]
            for index, (width, count) in enumerate(zip(widths, layers, strict=True)):
                stride = 1 if index == 0 else 2
                out_channels = width * block.expansion
                down = (projection(inplanes, out_channels, stride)
                        if stride != 1 or inplanes != out_channels else None)
                blocks = [block(inplanes, width, stride, down)]
                blocks += [block(out_channels, width) for _ in range(count - 1)]
                setattr(self, f"layer{index + 1}", tnn.Sequential(*blocks))
                inplanes = out_channels
            self.num_stages = len(widths)
            self.avgpool = tnn.AdaptiveAvgPool2d((1, 1))
            self.fc = tnn.Linear(inplanes, num_classes)

        def forward(self, x):
            x = self.relu(self.bn1(self.conv1(x)))
            if self.maxpool is not None:
                x = self.maxpool(x)
            for index in range(self.num_stages):
                x = getattr(self, f"layer{index + 1}")(x)
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return BasicBlock, Bottleneck, ResNet
