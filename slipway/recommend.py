"""The decision tree of the cloud-deployment chapter Slipway grew from, as a function: which
deployment pattern fits (docs/recommend.md).

    Do you need millisecond latency?
    ├─ Yes → Container service (ECS, Cloud Run) or VMs
    └─ No
       ├─ Is traffic sporadic?
       │  ├─ Yes → Serverless (Lambda, Cloud Functions)
       │  └─ No → Container service
       └─ Need complex orchestration?
          ├─ Yes → Kubernetes
          └─ No → Managed ML platform (SageMaker, Vertex AI)

The "No" branch has two questions. They are read top to bottom and the first answer that decides
wins: sporadic traffic → serverless. With steady traffic, the orchestration question decides
between Kubernetes and a managed ML platform, and the tree's steady-traffic answer (container
service) is given as the alternative (docs/recommend.md).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Recommendation:
    pattern: str
    examples: str
    targets: str  # Slipway target kinds that implement the pattern
    path: list[str]
    why: str
    alternative: str = ""


def recommend(millisecond_latency: bool, sporadic_traffic: bool, complex_orchestration: bool) -> Recommendation:
    if millisecond_latency:
        return Recommendation(
            "Managed container service or virtual machines",
            "ECS/Fargate, Cloud Run, Azure Container Instances; EC2, GCE, Azure VMs",
            "cloudrun (Google Cloud Run), docker (any Docker host), ec2, local",
            ["millisecond latency? yes"],
            "a long-running container keeps the model in memory: no cold starts, no platform hop on the request path",
        )
    if sporadic_traffic:
        return Recommendation(
            "Serverless",
            "AWS Lambda (container images), Cloud Functions, Azure Functions",
            "lambda (AWS Lambda container images; Cloud Functions: planned)",
            ["millisecond latency? no", "traffic sporadic? yes"],
            "you pay per invocation and it scales to zero between bursts; the price is cold-start latency, "
            "which you said you can afford",
        )
    steady = ["millisecond latency? no", "traffic sporadic? no"]
    if complex_orchestration:
        return Recommendation(
            "Kubernetes",
            "EKS, GKE, AKS, or any cluster reachable through a kubeconfig",
            "kubernetes",
            [*steady, "complex orchestration? yes"],
            "steady traffic and many moving parts (several models, canary or blue/green, autoscaling "
            "policies) are what an orchestrator is for, and worth its operational cost",
        )
    return Recommendation(
        "Managed ML platform",
        "SageMaker endpoints, Vertex AI endpoints, Azure ML online endpoints",
        "sagemaker (Amazon SageMaker endpoints, promoted through deployment guardrails), "
        "vertex (Vertex AI endpoints, promoted by traffic split)",
        [*steady, "complex orchestration? no"],
        "steady traffic without orchestration needs of your own: let the platform run endpoints, "
        "monitoring and autoscaling",
        alternative="a managed container service (the tree's answer for steady traffic) if you would rather "
        "not adopt the ML platform's model format",
    )
