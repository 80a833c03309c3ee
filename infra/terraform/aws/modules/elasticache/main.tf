# Redis on ElastiCache: a replication group in the private subnets, encrypted at rest (KMS) and in transit
# (TLS), automatic failover and Multi-AZ when it has more than one node, only reachable from the cluster.
terraform {
  required_providers {
    aws = { source = "hashicorp/aws", version = "~> 5.100" }
  }
}

variable "name" {
  type = string
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  type = list(string)
}

variable "allowed_security_groups" {
  description = "Label => security group allowed to connect (static labels: the ids are known only after apply)"
  type        = map(string)
  default     = {}
}

variable "kms_key_arn" {
  type = string
}

variable "node_type" {
  type = string
}

variable "num_cache_clusters" {
  description = "Primary + replicas (1 = no replica)"
  type        = number
}

variable "engine_version" {
  type    = string
  default = "7.1"
}

variable "snapshot_retention_limit" {
  type    = number
  default = 1
}

resource "aws_elasticache_subnet_group" "this" {
  name       = var.name
  subnet_ids = var.subnet_ids
}

resource "aws_security_group" "this" {
  name        = "${var.name}-redis"
  description = "Redis ${var.name}: only from the cluster"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "redis" {
  for_each                     = var.allowed_security_groups
  security_group_id            = aws_security_group.this.id
  description                  = "Redis from ${each.key}"
  ip_protocol                  = "tcp"
  from_port                    = 6379
  to_port                      = 6379
  referenced_security_group_id = each.value
}

resource "aws_elasticache_replication_group" "this" {
  #checkov:skip=CKV2_AWS_50:Multi-AZ with automatic failover is on whenever there is a replica (prod: 2 nodes, asserted by the terraform tests); dev runs a single node on purpose
  #checkov:skip=CKV_AWS_31:An AUTH token would have to be a terraform value and so land in tfstate; access is confined to the cluster's security group inside private subnets, with TLS in transit
  replication_group_id       = var.name
  description                = "CTA ${var.name} Redis"
  engine                     = "redis"
  engine_version             = var.engine_version
  node_type                  = var.node_type
  num_cache_clusters         = var.num_cache_clusters
  automatic_failover_enabled = var.num_cache_clusters > 1
  multi_az_enabled           = var.num_cache_clusters > 1
  port                       = 6379
  subnet_group_name          = aws_elasticache_subnet_group.this.name
  security_group_ids         = [aws_security_group.this.id]
  at_rest_encryption_enabled = true
  kms_key_id                 = var.kms_key_arn
  transit_encryption_enabled = true
  snapshot_retention_limit   = var.snapshot_retention_limit
  auto_minor_version_upgrade = true
  apply_immediately          = false
}

output "primary_endpoint_address" {
  value = aws_elasticache_replication_group.this.primary_endpoint_address
}

output "port" {
  value = aws_elasticache_replication_group.this.port
}

output "security_group_id" {
  value = aws_security_group.this.id
}

output "settings" {
  description = "Effective protection and sizing settings (read by the terraform tests)"
  value = {
    at_rest_encryption_enabled = tobool(aws_elasticache_replication_group.this.at_rest_encryption_enabled)
    transit_encryption_enabled = aws_elasticache_replication_group.this.transit_encryption_enabled
    num_cache_clusters         = aws_elasticache_replication_group.this.num_cache_clusters
    automatic_failover_enabled = aws_elasticache_replication_group.this.automatic_failover_enabled
    multi_az_enabled           = aws_elasticache_replication_group.this.multi_az_enabled
    node_type                  = aws_elasticache_replication_group.this.node_type
    ingress_cidrs              = [for r in aws_vpc_security_group_ingress_rule.redis : r.cidr_ipv4]
  }
}
