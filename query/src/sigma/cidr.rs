//! `cidr_match(address, network)`: whether a recorded address lies in a network, the SQL
//! function the Sigma `cidr` modifier converts to.
//!
//! Addresses are compared as numbers, so every spelling the recorder writes matches (an
//! IPv4-mapped IPv6 address such as `::ffff:10.1.2.3` is in `10.0.0.0/8`). A value that is not
//! an address (NULL, a unix socket's empty address) is simply not in the network: the
//! function returns false, never NULL, so `NOT cidr_match(...)` means what it says.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, ScalarValue, exec_err};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

/// An IP network: an address with its host bits cleared, and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    bits: u8,
}

impl Network {
    /// The network of `addr`/`bits`; None when `bits` is longer than the address.
    pub fn new(addr: IpAddr, bits: u8) -> Option<Network> {
        let width = if addr.is_ipv4() { 32 } else { 128 };
        if bits > width {
            return None;
        }
        let masked = match addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & mask(bits, 32) as u32).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & mask(bits, 128)).into()),
        };
        Some(Network { addr: masked, bits })
    }

    /// Reads `a.b.c.d/n` or `x::y/n`.
    pub fn parse(text: &str) -> Option<Network> {
        let (addr, bits) = text.trim().split_once('/')?;
        Network::new(addr.parse().ok()?, bits.parse().ok()?)
    }

    /// Whether `addr` is in the network; an IPv4-mapped IPv6 address counts as its IPv4 one.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                u32::from(a) & mask(self.bits, 32) as u32 == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                u128::from(a) & mask(self.bits, 128) == u128::from(net)
            }
            _ => false,
        }
    }
}

fn mask(bits: u8, width: u32) -> u128 {
    if bits == 0 {
        0
    } else {
        (u128::MAX << (128 - bits as u32)) >> (128 - width)
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.bits)
    }
}

/// The `cidr_match` function, registered on every session by
/// [`crate::views::register`] (and on a cluster's servers, see [`crate::views::functions`]).
pub fn udf() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::from(CidrMatch::new()))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CidrMatch {
    signature: Signature,
}

impl CidrMatch {
    fn new() -> Self {
        CidrMatch {
            signature: Signature::string(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for CidrMatch {
    fn name(&self) -> &str {
        "cidr_match"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::common::Result<ColumnarValue> {
        let [addrs, networks] = args.args.as_slice() else {
            return exec_err!("cidr_match takes an address and a network");
        };
        let rows = args.number_rows;
        let strings = |v: &ColumnarValue| -> datafusion::common::Result<StringArray> {
            let array = v.to_array(rows)?;
            let array = arrow::compute::cast(&array, &DataType::Utf8)?;
            Ok(array
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| DataFusionError::Internal("cast to Utf8".into()))?
                .clone())
        };
        // The network is a literal in every converted rule: parse it once.
        let fixed = match networks {
            ColumnarValue::Scalar(s) => Some(match s {
                ScalarValue::Utf8(Some(t))
                | ScalarValue::Utf8View(Some(t))
                | ScalarValue::LargeUtf8(Some(t)) => Network::parse(t),
                _ => None,
            }),
            ColumnarValue::Array(_) => None,
        };
        let addrs = strings(addrs)?;
        let result: BooleanArray = match fixed {
            Some(network) => (0..addrs.len())
                .map(|i| Some(matches(network, &addrs, i)))
                .collect(),
            None => {
                let nets = strings(networks)?;
                (0..addrs.len())
                    .map(|i| {
                        let network = (!nets.is_null(i)).then(|| Network::parse(nets.value(i)));
                        Some(matches(network.flatten(), &addrs, i))
                    })
                    .collect()
            }
        };
        let result: ArrayRef = Arc::new(result);
        Ok(match (addrs_were_scalar(&args.args[0]), rows) {
            (true, _) => ColumnarValue::Scalar(ScalarValue::try_from_array(&result, 0)?),
            _ => ColumnarValue::Array(result),
        })
    }
}

fn addrs_were_scalar(v: &ColumnarValue) -> bool {
    matches!(v, ColumnarValue::Scalar(_))
}

fn matches(network: Option<Network>, addrs: &StringArray, i: usize) -> bool {
    let Some(network) = network else { return false };
    !addrs.is_null(i)
        && addrs
            .value(i)
            .parse::<IpAddr>()
            .is_ok_and(|a| network.contains(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses_in_every_spelling() {
        let net = Network::parse("10.0.0.0/8").unwrap();
        assert!(net.contains("10.200.1.2".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let net = Network::parse("172.16.0.0/12").unwrap();
        assert!(net.contains("172.31.255.255".parse().unwrap()));
        assert!(!net.contains("172.32.0.0".parse().unwrap()));
        let v6 = Network::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12:3456::1".parse().unwrap()));
        assert!(!v6.contains("fe80::1".parse().unwrap()));
        assert_eq!(
            Network::parse("192.168.1.77/24").unwrap().to_string(),
            "192.168.1.0/24"
        );
        assert!(
            Network::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(Network::parse("10.0.0.0/33").is_none());
        assert!(Network::parse("10.0.0/8").is_none());
    }
}
