"""Loads a compiled pipeline with the real KFP SDK (run by test_pipeline.py in
the .venv-kfp environment, whose protobuf pin differs from .venv's): strict
protobuf parsing of the PipelineSpec, its deploymentSpec and the Kubernetes
PlatformSpec (kfp-kubernetes' KubernetesExecutorConfig), and loading it as a
component. Prints a JSON summary on stdout."""
import json
import sys

import yaml
from google.protobuf import json_format
from kfp import components
from kfp.kubernetes import kubernetes_executor_config_pb2 as k8s
from kfp.pipeline_spec import pipeline_spec_pb2 as ps


def main(path):
    with open(path) as f:
        docs = list(yaml.safe_load_all(f))
    assert 1 <= len(docs) <= 2, "one or two YAML documents expected"
    spec = json_format.ParseDict(docs[0], ps.PipelineSpec())
    dep = json_format.ParseDict(docs[0]["deploymentSpec"], ps.PipelineDeploymentConfig())
    for name, comp in spec.components.items():
        if comp.executor_label:
            assert comp.executor_label in dep.executors, (name, comp.executor_label)
    mounts = {}
    if len(docs) == 2:
        plat = json_format.ParseDict(docs[1], ps.PlatformSpec())
        for ex, st in plat.platforms["kubernetes"].deployment_spec.executors.items():
            cfg = json_format.ParseDict(json_format.MessageToDict(st), k8s.KubernetesExecutorConfig())
            assert ex in dep.executors, ex
            mounts[ex] = [(m.mount_path, m.pvc_name_parameter.runtime_value.constant.string_value)
                          for m in cfg.pvc_mount]
    comp = components.load_component_from_file(path)
    conditions = {}

    def walk(dag, prefix):
        for tname, task in dag.tasks.items():
            if task.trigger_policy.condition:
                conditions[tname] = task.trigger_policy.condition
            ref = spec.components[task.component_ref.name]
            if ref.HasField("dag"):
                walk(ref.dag, prefix + tname + "/")

    walk(spec.root.dag, "")
    executors = {}
    for name, ex in dep.executors.items():
        c = ex.container
        executors[name] = {
            "image": c.image,
            "command": list(c.command),
            "args": list(c.args),
            "cpu": c.resources.resource_cpu_limit,
            "memory": c.resources.resource_memory_limit,
            "gpus": c.resources.accelerator.resource_count,
        }
    root_params = {k: {"type": ps.ParameterType.ParameterTypeEnum.Name(v.parameter_type),
                       "default": json_format.MessageToDict(v)["defaultValue"] if v.HasField("default_value") else None}
                   for k, v in spec.root.input_definitions.parameters.items()}
    tasks = {}
    for tname, task in spec.root.dag.tasks.items():
        tasks[tname] = {"deps": list(task.dependent_tasks),
                        "cache": task.caching_options.enable_cache,
                        "retries": task.retry_policy.max_retry_count,
                        "component": task.component_ref.name}
    print(json.dumps({
        "name": spec.pipeline_info.name,
        "component_name": comp.name,
        "schema": spec.schema_version,
        "tasks": tasks,
        "conditions": conditions,
        "components": sorted(spec.components),
        "executors": executors,
        "params": root_params,
        "mounts": mounts,
    }))


if __name__ == "__main__":
    main(sys.argv[1])
