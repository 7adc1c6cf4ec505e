"""Deployment targets: the ``Target`` protocol (``targets.base``) and one module per pattern."""

from __future__ import annotations

from typing import assert_never

from slipway.spec import CloudRunTarget as CloudRunConfig
from slipway.spec import DockerTarget as DockerConfig
from slipway.spec import Ec2Target as Ec2Config
from slipway.spec import KubernetesTarget as KubernetesConfig
from slipway.spec import LambdaTarget as LambdaConfig
from slipway.spec import LocalTarget as LocalConfig
from slipway.spec import SageMakerTarget as SageMakerConfig
from slipway.spec import TargetConfig
from slipway.spec import VertexTarget as VertexConfig
from targets.base import Target, TargetContext
from targets.local import LocalProcessTarget


def make_target(config: TargetConfig, ctx: TargetContext) -> Target:
    """The target for one stage, chosen by an exhaustive match on the config's type."""
    match config:
        case LocalConfig():
            return LocalProcessTarget(config, ctx)
        case DockerConfig():
            from targets.docker import DockerHostTarget

            return DockerHostTarget(config, ctx)
        case Ec2Config():
            from targets.ec2 import Ec2InstanceTarget

            return Ec2InstanceTarget(config, ctx)
        case KubernetesConfig():
            from targets.kubernetes import KubernetesClusterTarget

            return KubernetesClusterTarget(config, ctx)
        case CloudRunConfig():
            from targets.cloudrun import CloudRunServiceTarget

            return CloudRunServiceTarget(config, ctx)
        case SageMakerConfig():
            from targets.sagemaker import SageMakerEndpointTarget

            return SageMakerEndpointTarget(config, ctx)
        case LambdaConfig():
            from targets.awslambda import LambdaFunctionTarget

            return LambdaFunctionTarget(config, ctx)
        case VertexConfig():
            from targets.vertex import VertexEndpointTarget

            return VertexEndpointTarget(config, ctx)
        case _:
            assert_never(config)
